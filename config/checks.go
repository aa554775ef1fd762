package config

import (
	"errors"
	"fmt"
	"reflect"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"github.com/smtpgate/smtpgate/reply"
	"gopkg.in/yaml.v3"
)

// Checks is the checks: section, one block per check, kept as YAML nodes:
// each check decodes its own block (Block.Decode), so adding a check
// touches no type here. The chain of checks (package check) reports a
// block whose name no check has.
type Checks map[string]*yaml.Node

// UnmarshalYAML keeps each check's block as its node.
func (cs *Checks) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
		return nil
	}
	if n.Kind != yaml.MappingNode {
		return &yaml.TypeError{Errors: []string{fmt.Sprintf("line %d: checks: want a mapping of check names to their settings", n.Line)}}
	}
	m := Checks{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		m[k.Value] = v
	}
	*cs = m
	return nil
}

// validate checks what every block has: mode and reply. The rest of a
// block is the check's to decode and validate.
func (cs Checks) validate(c *Config, v *validator) {
	for _, name := range cs.Names() {
		cm, err := c.Block(name).Common()
		if err != nil {
			v.fileErr(err)
			continue
		}
		switch cm.Mode {
		case "", "enforce", "warn", "off":
		default:
			v.errorf("checks."+name+".mode", "%q: want enforce, warn or off", cm.Mode)
		}
		if cm.Reply != "" {
			if _, err := reply.ParseRefusal(cm.Reply); err != nil {
				v.errorf("checks."+name+".reply", "%v", err)
			}
		}
	}
}

// Names lists the configured check names, sorted.
func (cs Checks) Names() []string {
	names := make([]string, 0, len(cs))
	for k := range cs {
		names = append(names, k)
	}
	sort.Strings(names)
	return names
}

// Block returns the block of the check called name (an empty block when
// the configuration has none), for the check to decode.
func (c *Config) Block(name string) *Block {
	return &Block{File: c.Path, Key: "checks." + name, Node: c.Checks[name]}
}

// Block is one check's settings under checks:. Every block may hold
// mode (enforce, warn or off) and reply ("550 5.7.1 text"), which the
// policy reads; the check decodes the rest into its own type.
type Block struct {
	File string
	Key  string     // "checks.spf"
	Node *yaml.Node // nil when the configuration has no such block
}

// Common is what every block has.
type Common struct {
	Mode  string `yaml:"mode"`
	Reply string `yaml:"reply"`
}

// Common decodes mode and reply, whatever else the block holds.
func (b *Block) Common() (Common, error) {
	var c Common
	if b.Node == nil {
		return c, nil
	}
	if b.Node.Kind != yaml.MappingNode {
		if b.Node.Tag == "!!null" {
			return c, nil
		}
		return c, Errors{{File: b.File, Line: b.Node.Line, Key: b.Key, Msg: "want a mapping of settings"}}
	}
	for i := 0; i+1 < len(b.Node.Content); i += 2 {
		k, v := b.Node.Content[i], b.Node.Content[i+1]
		switch k.Value {
		case "mode":
			c.Mode = v.Value
		case "reply":
			c.Reply = v.Value
		}
	}
	return c, nil
}

// Decode decodes the block, apart from mode and reply, into v, whose
// unknown keys are errors. Errors are Errors naming the file, the line and
// the key ("t.yaml:5: checks.dnsbl.zones: ...").
func (b *Block) Decode(v any) error {
	if b.Node == nil || b.Node.Kind != yaml.MappingNode {
		return nil
	}
	rest := &yaml.Node{Kind: yaml.MappingNode, Tag: b.Node.Tag, Line: b.Node.Line, Column: b.Node.Column}
	for i := 0; i+1 < len(b.Node.Content); i += 2 {
		if k := b.Node.Content[i].Value; k == "mode" || k == "reply" {
			continue
		}
		rest.Content = append(rest.Content, b.Node.Content[i], b.Node.Content[i+1])
	}
	return b.decodeNode(rest, v)
}

var blockFieldRe = regexp.MustCompile(`^field (\S+) not found in type \S+$`)

// decodeNode decodes n into v, reporting keys v has no field for.
func (b *Block) decodeNode(n *yaml.Node, v any) error {
	var errs Errors
	errs = append(errs, b.unknownKeys(n, v)...)
	if err := n.Decode(v); err != nil {
		var te *yaml.TypeError
		if errors.As(err, &te) {
			for _, e := range te.Errors {
				ce := Error{File: b.File, Key: b.Key, Msg: e}
				if m := yamlLineRe.FindStringSubmatch(e); m != nil {
					ce.Line, _ = strconv.Atoi(m[1])
					ce.Msg = m[2]
				}
				if m := blockFieldRe.FindStringSubmatch(ce.Msg); m != nil {
					continue // reported by unknownKeys
				}
				errs = append(errs, ce)
			}
		} else {
			errs = append(errs, Error{File: b.File, Line: n.Line, Key: b.Key, Msg: err.Error()})
		}
	}
	if len(errs) > 0 {
		return errs
	}
	return nil
}

// unknownKeys reports the keys of mapping n that the struct v has no yaml
// field for (v's known keys are its yaml tags, and those of inlined
// structs).
func (b *Block) unknownKeys(n *yaml.Node, v any) Errors {
	known := yamlKeys(v)
	if known == nil {
		return nil
	}
	var errs Errors
	for i := 0; i+1 < len(n.Content); i += 2 {
		k := n.Content[i]
		if !known[k.Value] {
			errs = append(errs, Error{File: b.File, Line: k.Line, Key: b.Key + "." + k.Value, Msg: "unknown key (in " + b.Key + ")"})
		}
	}
	return errs
}

// Errorf is an error about the block's key field (or the block itself
// when field is ""), at that key's line.
func (b *Block) Errorf(field string, format string, args ...any) error {
	key, line := b.Key, 0
	if b.Node != nil {
		line = b.Node.Line
	}
	if field != "" {
		key += "." + field
		line = keyLine(b.Node, field, line)
	}
	return Errors{{File: b.File, Line: line, Key: key, Msg: fmt.Sprintf(format, args...)}}
}

// yamlKeys lists the yaml keys of the struct v points to, following
// inlined structs; nil when v is not a pointer to a struct.
func yamlKeys(v any) map[string]bool {
	t := reflect.TypeOf(v)
	if t == nil || t.Kind() != reflect.Pointer || t.Elem().Kind() != reflect.Struct {
		return nil
	}
	keys := map[string]bool{}
	var walk func(reflect.Type)
	walk = func(t reflect.Type) {
		for i := 0; i < t.NumField(); i++ {
			f := t.Field(i)
			tag := f.Tag.Get("yaml")
			name, opts, _ := strings.Cut(tag, ",")
			if name == "-" {
				continue
			}
			if strings.Contains(opts, "inline") && f.Type.Kind() == reflect.Struct {
				walk(f.Type)
				continue
			}
			if !f.IsExported() {
				continue
			}
			if name == "" {
				name = strings.ToLower(f.Name)
			}
			keys[name] = true
		}
	}
	walk(t.Elem())
	return keys
}
