package proxy

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// metrics are smtpgate's Prometheus metrics. It implements
// session.Metrics; the upstream and DNS hooks feed it too.
type metrics struct {
	reg *prometheus.Registry

	sessionsTotal   prometheus.Counter
	silentConns     prometheus.Counter
	limitRejections *prometheus.CounterVec
	replies         *prometheus.CounterVec
	transactions    *prometheus.CounterVec
	upstreamSeconds *prometheus.HistogramVec
	upstreamErrors  *prometheus.CounterVec
	identity        *prometheus.CounterVec
	dnsSeconds      prometheus.Histogram
	reloads         *prometheus.CounterVec
	storeErrors     *prometheus.CounterVec
}

func newMetrics(s *Server) *metrics {
	m := &metrics{reg: prometheus.NewRegistry()}
	f := func(c prometheus.Collector) { m.reg.MustRegister(c) }
	m.sessionsTotal = prometheus.NewCounter(prometheus.CounterOpts{Name: "smtpgate_sessions_total", Help: "Client connections accepted (not refused by a connection limit)."})
	f(m.sessionsTotal)
	m.silentConns = prometheus.NewCounter(prometheus.CounterOpts{Name: "smtpgate_silent_connections_total", Help: "Client connections closed by the client before it sent anything (load balancer health checks, port scans); logged at debug level only."})
	f(m.silentConns)
	f(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "smtpgate_sessions_open", Help: "Client connections open now."}, func() float64 {
		s.mu.Lock()
		defer s.mu.Unlock()
		return float64(len(s.conns))
	}))
	f(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "smtpgate_upstream_connections_held", Help: "Sessions holding a connection to the MTA (capped by upstream.max_connections)."}, func() float64 {
		total, _ := s.upLim.inUse(netip.Addr{})
		return float64(total)
	}))
	m.limitRejections = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "smtpgate_limit_rejections_total", Help: "Connections and commands refused by a limit or protocol hygiene rule."}, []string{"limit"})
	f(m.limitRejections)
	m.replies = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "smtpgate_replies_total", Help: "Decisions by stage and check; class is the reply class (2xx, 4xx, 5xx), pass, or warn (warn mode)."}, []string{"stage", "check", "class"})
	f(m.replies)
	m.transactions = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "smtpgate_transactions_total", Help: "Messages at the end of DATA by the class of the reply the MTA gave."}, []string{"class"})
	f(m.transactions)
	m.upstreamSeconds = prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "smtpgate_upstream_reply_seconds", Help: "Time the MTA took to reply, by command.", Buckets: prometheus.ExponentialBuckets(0.0005, 4, 10)}, []string{"op"})
	f(m.upstreamSeconds)
	m.upstreamErrors = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "smtpgate_upstream_errors_total", Help: "Failures talking to the MTA (dial, timeout, connection lost), by command."}, []string{"op"})
	f(m.upstreamErrors)
	m.identity = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "smtpgate_upstream_identity_degraded_total", Help: "MTA connections that do not present the real client as upstream.xclient asks: refused is the command the MTA refused (xclient, xforward, or none when it offers neither), mode what was used instead (xforward, off, or failed: the connection was given up)."}, []string{"refused", "mode"})
	f(m.identity)
	m.dnsSeconds = prometheus.NewHistogram(prometheus.HistogramOpts{Name: "smtpgate_dns_query_seconds", Help: "DNS queries sent to the servers (cache misses), by duration.", Buckets: prometheus.ExponentialBuckets(0.0005, 4, 9)})
	f(m.dnsSeconds)
	m.reloads = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "smtpgate_reloads_total", Help: "Configuration reloads, by result."}, []string{"result"})
	f(m.reloads)
	m.storeErrors = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "smtpgate_store_errors_total", Help: "Calls to the shared state store (store.redis) that failed or were not made while it is down, by use: rate_limits and auth then count on this node, recipient_probes ask the MTA."}, []string{"use"})
	f(m.storeErrors)
	for _, u := range []string{useRateLimits, useAuth, useProbes} {
		m.storeErrors.WithLabelValues(u)
	}
	f(dnsCollector{s})
	f(collectors.NewGoCollector())
	f(collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	for _, l := range []string{limMaxConns, limMaxConnsPerIP, limConnRate, limMessages, limRecipients, limRcptsPerSender, "early_talker", "unauth_pipelining", "max_errors", "max_unknown_commands", "max_junk_commands", limUpstreamConns, limUpstreamConnsPerIP, "transaction_idle_timeout"} {
		m.limitRejections.WithLabelValues(l)
	}
	return m
}

func (m *metrics) limitRejected(limit string) { m.limitRejections.WithLabelValues(limit).Inc() }

func (m *metrics) identityDegraded(refused, mode string) {
	m.identity.WithLabelValues(strings.ToLower(refused), mode).Inc()
}

func class(code int) string {
	if code == 0 {
		return "pass"
	}
	return strconv.Itoa(code/100) + "xx"
}

// Decision implements session.Metrics.
func (m *metrics) Decision(stage, check string, code int, warn bool) {
	c := class(code)
	if warn && code != 0 {
		c = "warn"
	}
	m.replies.WithLabelValues(stage, check, c).Inc()
}

// Transaction implements session.Metrics.
func (m *metrics) Transaction(code int) { m.transactions.WithLabelValues(class(code)).Inc() }

// upstream is upstream.Options.Observe.
func (m *metrics) upstream(op string, wait time.Duration, err error) {
	if err != nil {
		m.upstreamErrors.WithLabelValues(op).Inc()
		return
	}
	m.upstreamSeconds.WithLabelValues(op).Observe(wait.Seconds())
}

// dnsQuery is dns.Options.OnQuery.
func (m *metrics) dnsQuery(d time.Duration, err error) { m.dnsSeconds.Observe(d.Seconds()) }

// dnsCollector exports the resolver's own counters (dns.Stats)
// at scrape time, from whichever resolver the running config uses.
type dnsCollector struct{ s *Server }

var (
	dnsHits      = prometheus.NewDesc("smtpgate_dns_cache_hits_total", "DNS lookups answered from the cache.", nil, nil)
	dnsMisses    = prometheus.NewDesc("smtpgate_dns_cache_misses_total", "DNS lookups not in the cache.", nil, nil)
	dnsCoalesced = prometheus.NewDesc("smtpgate_dns_coalesced_total", "DNS lookups that waited for an identical one in flight.", nil, nil)
	dnsQueries   = prometheus.NewDesc("smtpgate_dns_queries_total", "DNS queries sent to the servers.", nil, nil)
	dnsFailures  = prometheus.NewDesc("smtpgate_dns_failures_total", "DNS lookups that ended in an error (timeout, network).", nil, nil)
	dnsEntries   = prometheus.NewDesc("smtpgate_dns_cache_entries", "Answers in the DNS cache.", nil, nil)
	dnsHitRatio  = prometheus.NewDesc("smtpgate_dns_cache_hit_ratio", "Cache hits over lookups since start.", nil, nil)
)

func (dnsCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{dnsHits, dnsMisses, dnsCoalesced, dnsQueries, dnsFailures, dnsEntries, dnsHitRatio} {
		ch <- d
	}
}

func (c dnsCollector) Collect(ch chan<- prometheus.Metric) {
	c.s.resMu.Lock()
	r := c.s.res
	c.s.resMu.Unlock()
	if r == nil {
		return
	}
	st := r.Stats()
	ch <- prometheus.MustNewConstMetric(dnsHits, prometheus.CounterValue, float64(st.Hits))
	ch <- prometheus.MustNewConstMetric(dnsMisses, prometheus.CounterValue, float64(st.Misses))
	ch <- prometheus.MustNewConstMetric(dnsCoalesced, prometheus.CounterValue, float64(st.Coalesced))
	ch <- prometheus.MustNewConstMetric(dnsQueries, prometheus.CounterValue, float64(st.Queries))
	ch <- prometheus.MustNewConstMetric(dnsFailures, prometheus.CounterValue, float64(st.Failures))
	ch <- prometheus.MustNewConstMetric(dnsEntries, prometheus.GaugeValue, float64(st.Entries))
	ratio := 0.0
	if n := st.Hits + st.Misses; n > 0 {
		ratio = float64(st.Hits) / float64(n)
	}
	ch <- prometheus.MustNewConstMetric(dnsHitRatio, prometheus.GaugeValue, ratio)
}

// serveMetrics starts the metrics.address listener: /metrics, /healthz
// (the process is up), /readyz (the MTA answers) and POST /reload
// (loopback clients only).
func (s *Server) serveMetrics(addr string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("metrics.address %s: %w", addr, err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(s.met.reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) { fmt.Fprintln(w, "ok") })
	mux.HandleFunc("/readyz", s.readyz)
	mux.HandleFunc("/reload", s.reloadHandler)
	s.http = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	s.httpLn = ln
	go s.http.Serve(ln)
	s.Logger.Info("metrics listening", "address", ln.Addr().String())
	return nil
}

// readyz is ready when the MTA accepts a connection and greets with 220,
// and MTA connections are not being given up for a refused XCLIENT or
// XFORWARD; the body says how the MTA learns the real client. A shared
// store (store.redis) that does not answer makes the first line
// "degraded" (still 200: the node takes mail on its own state).
func (s *Server) readyz(w http.ResponseWriter, r *http.Request) {
	addr := s.cfg.Load().Upstream.Address
	ctx, cancel := context.WithTimeout(r.Context(), 3*time.Second)
	defer cancel()
	if err := greets(ctx, addr); err != nil {
		http.Error(w, "upstream "+addr+": "+err.Error(), http.StatusServiceUnavailable)
		return
	}
	detail, failed := s.ident.detail()
	if failed {
		// Still refused? A full handshake tells, and fixes the state if not.
		s.recheckIdentity(ctx)
		detail, failed = s.ident.detail()
	}
	if failed {
		http.Error(w, "upstream "+addr+": "+detail, http.StatusServiceUnavailable)
		return
	}
	storeLine, degraded := s.storeHealth(ctx)
	if degraded {
		fmt.Fprintln(w, "degraded")
	} else {
		fmt.Fprintln(w, "ok")
	}
	fmt.Fprintln(w, detail)
	if storeLine != "" {
		fmt.Fprintln(w, storeLine)
	}
}

func greets(ctx context.Context, addr string) error {
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		c.SetDeadline(dl)
	}
	buf := make([]byte, 512)
	n, err := c.Read(buf)
	if n < 4 || string(buf[:3]) != "220" {
		if err == nil {
			err = fmt.Errorf("greeting %q", buf[:n])
		}
		return err
	}
	c.Write([]byte("QUIT\r\n"))
	return nil
}

var errNoReload = errors.New("no reload function")

// reloadHandler is POST /reload, for loopback clients only: it does what
// SIGHUP does and answers with the result (the errors of a refused
// configuration included).
func (s *Server) reloadHandler(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", "POST")
		http.Error(w, "POST only", http.StatusMethodNotAllowed)
		return
	}
	if ap, err := netip.ParseAddrPort(r.RemoteAddr); err != nil || !ap.Addr().Unmap().IsLoopback() {
		http.Error(w, "reload is for loopback clients only", http.StatusForbidden)
		return
	}
	err := errNoReload
	if s.ReloadFunc != nil {
		err = s.ReloadFunc()
	}
	if err != nil {
		http.Error(w, "reload refused, keeping the running configuration:\n"+err.Error(), http.StatusUnprocessableEntity)
		return
	}
	fmt.Fprintln(w, "reloaded")
}

// MetricsAddr returns the metrics listener's address, or nil.
func (s *Server) MetricsAddr() net.Addr {
	if s.httpLn == nil {
		return nil
	}
	return s.httpLn.Addr()
}
