// Points Haraka's resolver (node's dns module, which Haraka's rDNS lookup
// of each client uses) at the benchmark's dnsd on loopback, as smtpgate's
// is, so that the benchmark sends no DNS query off the machine.
// run.sh passes dnsd's address in BENCH_DNS ("127.0.0.1:PORT").
const dns = require('node:dns')

exports.register = function () {
    const servers = (process.env.BENCH_DNS || '').split(',').filter(Boolean)
    if (!servers.length) return
    dns.setServers(servers)
    this.loginfo(`DNS servers: ${dns.getServers().join(', ')}`)
}
