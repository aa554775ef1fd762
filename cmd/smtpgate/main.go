// Command smtpgate is a front-line SMTP proxy: it listens on port 25,
// refuses what must be refused while the client is connected, and relays
// the rest to the real MTA on a loopback port, answering the client with
// the MTA's own reply.
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	_ "net/http/pprof" // served only when SMTPGATE_PPROF is set
	"os"
	"os/signal"
	"strings"
	"syscall"

	"golang.org/x/term"

	"github.com/smtpgate/smtpgate/check"
	"github.com/smtpgate/smtpgate/config"
	"github.com/smtpgate/smtpgate/proxy"
	"github.com/smtpgate/smtpgate/users"
)

// version is set with -ldflags "-X main.version=...".
var version = "0.1.0-dev"

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 && args[0] == "passwd" {
		pf := flag.NewFlagSet("smtpgate passwd", flag.ContinueOnError)
		pf.SetOutput(stderr)
		cost := pf.Int("cost", 12, "bcrypt cost (4-31; each step doubles the work)")
		if err := pf.Parse(args[1:]); err != nil {
			return 2
		}
		return passwd(os.Stdin, *cost, stdout, stderr)
	}
	if len(args) > 0 && args[0] == "dkim-keygen" {
		return dkimKeygen(args[1:], stdout, stderr)
	}
	if len(args) > 0 && args[0] == "reload" {
		return reloadCmd(args[1:], stdout, stderr)
	}
	fs := flag.NewFlagSet("smtpgate", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", "/etc/smtpgate/smtpgate.yaml", "configuration file")
	checkOnly := fs.Bool("check", false, "validate the configuration and every file it names, then exit")
	showVersion := fs.Bool("version", false, "print the version and exit")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *showVersion {
		fmt.Fprintln(stdout, "smtpgate", version)
		return 0
	}
	cfg, err := config.Load(*path)
	if err != nil {
		fmt.Fprintln(stderr, err)
		if *checkOnly && cfg != nil {
			// Report the errors in the files the checks load too, so
			// that one -check run lists everything to fix.
			if _, err := check.Build(cfg, check.Deps{}); err != nil {
				fmt.Fprintln(stderr, err)
			}
		}
		return 1
	}
	logger := newLogger(cfg, stderr)
	srv, err := proxy.New(cfg, logger)
	if err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", *path, err)
		return 1
	}
	if *checkOnly {
		fmt.Fprintf(stdout, "%s: ok\n", *path)
		return 0
	}
	srv.ReloadFunc = func() error { return reload(srv, *path, logger) }
	if err := srv.Listen(); err != nil {
		logger.Error("cannot listen", "error", err.Error())
		return 1
	}
	servePprof(logger)
	logger.Info("smtpgate starting", "version", version, "config", *path, "upstream", cfg.Upstream.Address)

	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
	served := make(chan error, 1)
	go func() { served <- srv.Serve() }()
	for {
		select {
		case err := <-served:
			if err != nil {
				logger.Error("server stopped", "error", err.Error())
				return 1
			}
			return 0
		case sig := <-sigs:
			if sig == syscall.SIGHUP {
				reload(srv, *path, logger)
				continue
			}
			logger.Info("shutting down", "signal", sig.String(), "drain", cfg.Shutdown.DrainTimeout.D().String())
			ctx, cancel := context.WithTimeout(context.Background(), srv.DrainTimeout())
			err := srv.Shutdown(ctx)
			cancel()
			if err != nil && !errors.Is(err, context.DeadlineExceeded) {
				logger.Error("shutdown", "error", err.Error())
			}
			logger.Info("stopped")
			return 0
		}
	}
}

// reload reads the configuration again; a broken one is logged and the
// running one kept.
func reload(srv *proxy.Server, path string, logger *slog.Logger) error {
	cfg, err := config.Load(path)
	if err == nil {
		err = srv.Reload(cfg)
	}
	if err != nil {
		logger.Error("reload refused, keeping the running configuration", "config", path, "error", err.Error())
	}
	return err
}

func newLogger(cfg *config.Config, w io.Writer) *slog.Logger {
	var level slog.Level
	level.UnmarshalText([]byte(cfg.Log.Level))
	opts := &slog.HandlerOptions{Level: level}
	if cfg.Log.Format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// passwd reads a password (from the terminal without echo, or the first
// line of standard input) and prints the bcrypt hash for auth.users_file.
func passwd(in *os.File, cost int, stdout, stderr io.Writer) int {
	var pw string
	if term.IsTerminal(int(in.Fd())) {
		fmt.Fprint(stderr, "Password: ")
		b, err := term.ReadPassword(int(in.Fd()))
		fmt.Fprintln(stderr)
		if err != nil {
			fmt.Fprintln(stderr, "smtpgate passwd:", err)
			return 1
		}
		fmt.Fprint(stderr, "Again: ")
		again, err := term.ReadPassword(int(in.Fd()))
		fmt.Fprintln(stderr)
		if err != nil || string(again) != string(b) {
			fmt.Fprintln(stderr, "smtpgate passwd: the passwords differ")
			return 1
		}
		pw = string(b)
	} else {
		line, err := bufio.NewReader(in).ReadString('\n')
		if err != nil && err != io.EOF {
			fmt.Fprintln(stderr, "smtpgate passwd:", err)
			return 1
		}
		pw = strings.TrimRight(line, "\r\n")
	}
	h, err := users.HashPassword(pw, cost)
	if err != nil {
		fmt.Fprintln(stderr, "smtpgate passwd:", err)
		return 1
	}
	fmt.Fprintln(stdout, h)
	return 0
}

// servePprof serves net/http/pprof on the address in SMTPGATE_PPROF
// (e.g. 127.0.0.1:6060), for profiling and the benchmark and soak
// harnesses. It is deliberately not a configuration key: it is a
// debugging aid, never for production on a public address.
func servePprof(logger *slog.Logger) {
	addr := os.Getenv("SMTPGATE_PPROF")
	if addr == "" {
		return
	}
	logger.Warn("serving pprof", "address", addr)
	go func() {
		if err := http.ListenAndServe(addr, nil); err != nil {
			logger.Error("pprof", "error", err.Error())
		}
	}()
}
