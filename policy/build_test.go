package policy

import (
	"context"
	"strings"
	"testing"

	"github.com/smtpgate/smtpgate/config"
)

type colourCheck struct{ colour string }

func (colourCheck) Name() string                              { return "colour" }
func (colourCheck) CheckHelo(context.Context, *Client) Result { return Result{} }

// misspelt has CheckRcp instead of CheckRcpt: it joins no stage.
type misspelt struct{}

func (misspelt) Name() string { return "misspelt" }
func (misspelt) CheckRcp(context.Context, *Client, *Envelope, string) Result {
	return Result{}
}

var colourSpec = Spec{Name: "colour", Default: Warn, New: func(env *Env, b *config.Block) (Checker, error) {
	var o struct {
		Colour string `yaml:"colour"`
	}
	if err := b.Decode(&o); err != nil {
		return nil, err
	}
	if o.Colour == "" {
		return nil, nil // nothing to check
	}
	if o.Colour != "red" && o.Colour != "green" {
		return nil, b.Errorf("colour", "%q: want red or green", o.Colour)
	}
	return colourCheck{o.Colour}, nil
}}

func parse(t *testing.T, yml string) *config.Config {
	t.Helper()
	cfg, err := config.Parse([]byte("hostname: mx.example.com\n"+yml), "t.yaml")
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

func TestBuildDecodesEachBlock(t *testing.T) {
	p, err := Build([]Spec{colourSpec}, &Env{Config: parse(t, "checks:\n  colour:\n    colour: red\n    reply: \"554 5.7.1 not today\"\n")})
	if err != nil {
		t.Fatal(err)
	}
	if names := p.Names(); len(names) != 1 || names[0] != "colour" {
		t.Fatalf("names %v", names)
	}
	c := p.checks[0]
	if c.Mode != Warn || c.Reply == nil || c.Reply.String() != "554 5.7.1 not today" {
		t.Errorf("check %+v", c)
	}
	// No block, or a block that gives the check nothing to do: left out.
	for _, yml := range []string{"", "checks:\n  colour: {mode: enforce}\n"} {
		p, err := Build([]Spec{colourSpec}, &Env{Config: parse(t, yml)})
		if err != nil || len(p.Names()) != 0 {
			t.Errorf("%q: %v %v", yml, p.Names(), err)
		}
	}
}

func TestBuildErrorsNameFileLineKey(t *testing.T) {
	for _, tc := range []struct {
		yml   string
		chain []Spec
		want  string
	}{
		{"checks:\n  colour:\n    colour: blue\n", []Spec{colourSpec}, `t.yaml:4: checks.colour.colour: "blue": want red or green`},
		{"checks:\n  colour:\n    color: red\n", []Spec{colourSpec}, "t.yaml:4: checks.colour.color: unknown key (in checks.colour)"},
		{"checks:\n  colour:\n    colour: [red]\n", []Spec{colourSpec}, "t.yaml:4: checks.colour: cannot unmarshal"},
		{"checks:\n  nosuch:\n    mode: warn\n", []Spec{colourSpec}, "t.yaml:4: checks.nosuch: unknown check (the checks are: colour)"},
		{"checks:\n  other:\n    colour: red\n", []Spec{{Name: "other", New: colourSpec.New}}, `check "other" calls itself "colour"`},
		{"", []Spec{{Name: "misspelt", New: func(*Env, *config.Block) (Checker, error) { return misspelt{}, nil }}}, `check "misspelt" implements no stage interface`},
	} {
		_, err := Build(tc.chain, &Env{Config: parse(t, tc.yml)})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: error %v, want %q", tc.yml, err, tc.want)
		}
	}
}

func TestEnvSharedLoadsOnce(t *testing.T) {
	env := &Env{}
	n := 0
	for range 3 {
		v, err := env.Shared("k", func() (any, error) { n++; return "table", nil })
		if err != nil || v != "table" {
			t.Fatal(v, err)
		}
	}
	if n != 1 {
		t.Errorf("loaded %d times", n)
	}
}
