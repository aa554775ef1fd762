package main

import (
	"flag"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/smtpgate/smtpgate/config"
)

// reloadCmd is "smtpgate reload": it checks the configuration file and
// asks the running smtpgate to reload it through POST /reload on
// metrics.address (loopback only), printing the result. A configuration
// that does not load is reported here and not sent. Without
// metrics.address, send SIGHUP instead.
func reloadCmd(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("smtpgate reload", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", "/etc/smtpgate/smtpgate.yaml", "configuration file")
	addr := fs.String("address", "", "metrics address of the running smtpgate (default: metrics.address of the configuration)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	cfg, err := config.Load(*path)
	if err != nil {
		fmt.Fprintln(stderr, err)
		fmt.Fprintln(stderr, "smtpgate reload: not sent, the running configuration is kept")
		return 1
	}
	if *addr == "" {
		*addr = cfg.Metrics.Address
	}
	if *addr == "" {
		fmt.Fprintln(stderr, "smtpgate reload: metrics.address is not set; send SIGHUP to the smtpgate process instead")
		return 1
	}
	client := &http.Client{Timeout: 30 * time.Second}
	resp, err := client.Post("http://"+*addr+"/reload", "text/plain", nil)
	if err != nil {
		fmt.Fprintln(stderr, "smtpgate reload:", err)
		return 1
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode != http.StatusOK {
		fmt.Fprintln(stderr, strings.TrimSpace(string(body)))
		return 1
	}
	fmt.Fprintln(stdout, strings.TrimSpace(string(body)))
	return 0
}
