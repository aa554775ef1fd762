package content

import (
	"os"

	"github.com/smtpgate/smtpgate/config"
	"github.com/smtpgate/smtpgate/policy"
	"github.com/smtpgate/smtpgate/table"
)

// Options is checks.header_checks and checks.body_checks.
type Options struct {
	// File is a Postfix regexp_table(5) file.
	File string `yaml:"file"`
}

// The content table lines of the chain, enforced by default; without a
// file (or in mode off) the table is not even read.
var (
	HeaderSpec = policy.Spec{Name: NameHeader, Default: policy.Enforce, New: func(_ *policy.Env, b *config.Block) (policy.Checker, error) {
		t, err := load(b)
		if t == nil {
			return nil, err
		}
		c, err := NewHeaderChecks(t)
		if err != nil {
			return nil, err
		}
		return c, nil
	}}
	BodySpec = policy.Spec{Name: NameBody, Default: policy.Enforce, New: func(_ *policy.Env, b *config.Block) (policy.Checker, error) {
		t, err := load(b)
		if t == nil {
			return nil, err
		}
		c, err := NewBodyChecks(t)
		if err != nil {
			return nil, err
		}
		return c, nil
	}}
)

func load(b *config.Block) (*table.RegexpTable, error) {
	var o Options
	if err := b.Decode(&o); err != nil {
		return nil, err
	}
	if cm, _ := b.Common(); o.File == "" || cm.Mode == "off" {
		return nil, nil
	}
	f, err := os.Open(o.File)
	if err != nil {
		return nil, b.Errorf("file", "%v", err)
	}
	defer f.Close()
	return table.ParseRegexpTable(f, o.File)
}
