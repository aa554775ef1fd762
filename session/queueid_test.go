package session

import (
	"testing"

	"github.com/smtpgate/smtpgate/reply"
)

// The accept log's queue_id is found in each MTA's own reply to the dot.
func TestQueueIDFromEachMTA(t *testing.T) {
	for _, tc := range []struct{ text, want string }{
		{"Ok: queued as C4F6A985F59", "C4F6A985F59"},           // Postfix
		{"OK id=1xZV3S-0006Zk-39", "1xZV3S-0006Zk-39"},         // Exim
		{"b624e866 Message accepted for delivery", "b624e866"}, // OpenSMTPD
		{"Ok", ""},
	} {
		if got := queueID(reply.Reply{Code: 250, Text: tc.text}); got != tc.want {
			t.Errorf("%q: queue id %q, want %q", tc.text, got, tc.want)
		}
	}
}
