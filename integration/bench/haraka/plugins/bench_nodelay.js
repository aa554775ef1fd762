// Diagnosis only (run.sh adds it with HARAKA_NODELAY=1; the comparison row
// is Haraka as shipped, without it): sets TCP_NODELAY on the connections
// Haraka opens, such as smtp_forward's to the MTA. Haraka leaves Nagle's
// algorithm on there, and the final ".\r\n" of a message then waits for the
// MTA's delayed ACK (about 40 ms) before it is sent.
const net = require('node:net')

exports.register = function () {
    const connect = net.Socket.prototype.connect
    net.Socket.prototype.connect = function (...args) {
        const r = connect.apply(this, args)
        this.setNoDelay(true)
        return r
    }
    this.loginfo('TCP_NODELAY on outgoing connections')
}
