package policy

import (
	"bufio"
	"context"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"

	"github.com/smtpgate/smtpgate/reply"
)

// filterServer is a stand-in for a milter or policy server: a loopback
// listener that answers each request line with "ok <line>" and counts the
// connections it accepted and the requests each carried.
type filterServer struct {
	l  net.Listener
	mu sync.Mutex
	// requests per accepted connection, in accept order
	conns  []int
	closed int
	done   sync.WaitGroup
}

func startFilter(t *testing.T) *filterServer {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &filterServer{l: l}
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			f.mu.Lock()
			idx := len(f.conns)
			f.conns = append(f.conns, 0)
			f.mu.Unlock()
			f.done.Add(1)
			go func() {
				defer f.done.Done()
				defer c.Close()
				br := bufio.NewReader(c)
				for {
					line, err := br.ReadString('\n')
					if err != nil {
						f.mu.Lock()
						f.closed++
						f.mu.Unlock()
						return
					}
					f.mu.Lock()
					f.conns[idx]++
					f.mu.Unlock()
					c.Write([]byte("ok " + line))
				}
			}()
		}
	}()
	t.Cleanup(func() { l.Close() })
	return f
}

func (f *filterServer) counts() (conns []int, closed int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]int(nil), f.conns...), f.closed
}

// filterCheck is a stateful check: each session holds one connection to
// the filter server from Start to Close and asks it at MAIL and RCPT.
type filterCheck struct{ addr string }

func (filterCheck) Name() string { return "filter" }

// The Checker declares the stages; the Instance answers them.
func (filterCheck) CheckMail(context.Context, *Client, *Envelope, string) Result {
	panic("the session's instance answers, not the check")
}

func (filterCheck) CheckRcpt(context.Context, *Client, *Envelope, string) Result {
	panic("the session's instance answers, not the check")
}

func (k filterCheck) Start(ctx context.Context, c *Client) (Instance, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", k.addr)
	if err != nil {
		return nil, err
	}
	return &filterSession{conn: conn, br: bufio.NewReader(conn)}, nil
}

type filterSession struct {
	conn net.Conn
	br   *bufio.Reader
}

func (s *filterSession) ask(q string) Result {
	if _, err := s.conn.Write([]byte(q + "\n")); err != nil {
		return Rejected(reply.New(451, [3]int{4, 3, 0}, "filter gone"), err.Error())
	}
	a, err := s.br.ReadString('\n')
	if err != nil || a != "ok "+q+"\n" {
		return Rejected(reply.New(451, [3]int{4, 3, 0}, "filter gone"), "bad answer")
	}
	if strings.Contains(q, "spam") {
		return Rejected(reply.New(550, [3]int{5, 7, 1}, "filter says no"), a)
	}
	return Result{}
}

func (s *filterSession) CheckMail(_ context.Context, _ *Client, _ *Envelope, from string) Result {
	return s.ask("mail " + from)
}

func (s *filterSession) CheckRcpt(_ context.Context, _ *Client, _ *Envelope, rcpt string) Result {
	return s.ask("rcpt " + rcpt)
}

func (s *filterSession) Close() error { return s.conn.Close() }

// A stateful check keeps one connection for the whole session, however
// many transactions it carries, and the Run closes it at the end.
func TestStatefulCheckKeepsOneConnectionPerSession(t *testing.T) {
	f := startFilter(t)
	p := NewPolicy(Check{Mode: Enforce, Checker: filterCheck{f.l.Addr().String()}})
	ctx := context.Background()
	client := &Client{Addr: netip.MustParseAddr("192.0.2.1")}

	for session := 0; session < 2; session++ {
		run := p.Start(ctx, client)
		for _, from := range []string{"a@example.org", "b@example.org"} {
			env := &Envelope{From: from}
			if out := run.Mail(ctx, client, env, from); len(out.Decisions) != 0 {
				t.Fatalf("MAIL %s: %+v", from, out.Decisions)
			}
			for _, rcpt := range []string{"x@example.com", "y@example.com"} {
				if out := run.Rcpt(ctx, client, env, rcpt); len(out.Decisions) != 0 {
					t.Fatalf("RCPT %s: %+v", rcpt, out.Decisions)
				}
			}
		}
		out := run.Rcpt(ctx, client, &Envelope{}, "spam@example.com")
		if d, ok := out.Refusal(); !ok || d.Result.Reply.Code != 550 || d.Result.Reply.Enhanced != [3]int{5, 7, 1} || d.Check != "filter" {
			t.Fatalf("RCPT spam: %+v", out.Decisions)
		}
		if err := run.Close(); err != nil {
			t.Fatal(err)
		}
		if err := run.Close(); err != nil {
			t.Fatalf("second Close: %v", err)
		}
	}
	f.l.Close()
	f.done.Wait()
	conns, closed := f.counts()
	// Two sessions: two connections, each with 2 MAIL + 4 RCPT + 1 RCPT.
	if len(conns) != 2 || conns[0] != 7 || conns[1] != 7 || closed != 2 {
		t.Errorf("filter saw connections %v (requests each), %d closed; want [7 7], 2", conns, closed)
	}
}

// A stateful check that cannot start answers its stages with 451 4.3.0:
// an unavailable filter is a reason to try again, not to accept unchecked.
// In warn mode the failure is logged and the mail goes on.
func TestStatefulStartFailureTempfails(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close() // nothing listens there now
	ctx := context.Background()
	client := &Client{}
	for _, mode := range []Mode{Enforce, Warn} {
		run := NewPolicy(Check{Mode: mode, Checker: filterCheck{addr}}).Start(ctx, client)
		out := run.Mail(ctx, client, &Envelope{}, "a@example.org")
		if len(out.Decisions) != 1 {
			t.Fatalf("%v: decisions %+v", mode, out.Decisions)
		}
		d := out.Decisions[0]
		if d.Result.Reply.Code != 451 || d.Result.Reply.Enhanced != [3]int{4, 3, 0} || !strings.HasPrefix(d.Result.Evidence, "start: ") {
			t.Errorf("%v: %+v", mode, d)
		}
		if _, refused := out.Refusal(); refused != (mode == Enforce) {
			t.Errorf("%v: refused = %v", mode, refused)
		}
		if err := run.Close(); err != nil {
			t.Errorf("Close after a failed Start: %v", err)
		}
	}
}

// spfStub leaves an SPF result on the envelope at MAIL; dmarcStub reads
// it at RCPT, as DMARC will.
type spfStub struct{ result string }

func (spfStub) Name() string { return "spf" }
func (k spfStub) CheckMail(_ context.Context, _ *Client, env *Envelope, from string) Result {
	env.AddAuth(AuthResult{Method: "spf", Result: k.result, Domain: from[strings.LastIndexByte(from, '@')+1:], Property: "smtp.mailfrom"})
	return Result{}
}

type dmarcStub struct{}

func (dmarcStub) Name() string { return "dmarc" }
func (dmarcStub) CheckRcpt(_ context.Context, _ *Client, env *Envelope, _ string) Result {
	for _, r := range env.AuthFor("spf") {
		if r.Result == "pass" {
			return Result{}
		}
	}
	return Rejected(reply.New(550, [3]int{5, 7, 1}, "no aligned pass"), "spf results: "+strings.Repeat("x", len(env.Auth)))
}

func TestResultsTravelOnTheEnvelope(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		spf     string
		refused bool
	}{{"pass", false}, {"fail", true}} {
		run := NewPolicy(Check{Mode: Enforce, Checker: spfStub{tc.spf}}, Check{Mode: Enforce, Checker: dmarcStub{}}).Start(ctx, &Client{})
		env := &Envelope{From: "a@example.org"}
		run.Mail(ctx, &Client{}, env, env.From)
		if got := env.AuthFor("spf"); len(got) != 1 || got[0].Domain != "example.org" || got[0].Result != tc.spf {
			t.Fatalf("spf results on the envelope: %+v", env.Auth)
		}
		out := run.Rcpt(ctx, &Client{}, env, "x@example.com")
		if _, refused := out.Refusal(); refused != tc.refused {
			t.Errorf("spf %s: refused = %v, want %v", tc.spf, refused, tc.refused)
		}
	}
	// A nil envelope (a check called outside a transaction) ignores results.
	var nilEnv *Envelope
	nilEnv.AddAuth(AuthResult{Method: "spf"})
	if nilEnv.AuthFor("spf") != nil {
		t.Error("nil envelope has results")
	}
}

// The zero Run (no policy) passes everything; a nil policy too.
func TestNilPolicyPasses(t *testing.T) {
	var p *Policy
	run := p.Start(context.Background(), &Client{})
	if out := run.Rcpt(context.Background(), &Client{}, &Envelope{}, "x@example.com"); len(out.Decisions) != 0 {
		t.Errorf("%+v", out)
	}
	if err := run.Close(); err != nil {
		t.Error(err)
	}
	if p.HasBodyChecks() || p.HasHeaderChecks() || p.Names() != nil {
		t.Error("nil policy has checks")
	}
}
