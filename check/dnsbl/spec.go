package dnsbl

import (
	"fmt"

	"github.com/smtpgate/smtpgate/config"
	"github.com/smtpgate/smtpgate/policy"
)

// Options is checks.dnsbl.
type Options struct {
	Zones []struct {
		Zone   string `yaml:"zone"`
		Weight int    `yaml:"weight"`
		// Filter restricts the answers that count: 127.0.0.2,
		// 127.0.0.[2..11].
		Filter string `yaml:"filter"`
	} `yaml:"zones"`
	Threshold int `yaml:"threshold"`
}

// Spec is the dnsbl line of the chain: enforced by default, and nothing
// to check without zones.
var Spec = policy.Spec{Name: Name, Default: policy.Enforce, New: build}

func build(env *policy.Env, b *config.Block) (policy.Checker, error) {
	var o Options
	if err := b.Decode(&o); err != nil {
		return nil, err
	}
	if len(o.Zones) == 0 {
		return nil, nil
	}
	zones := make([]DNSBLZone, len(o.Zones))
	for i, z := range o.Zones {
		if z.Zone == "" {
			return nil, b.Errorf(fmt.Sprintf("zones.%d.zone", i), "missing zone name")
		}
		zones[i] = DNSBLZone{Zone: z.Zone, Weight: z.Weight, Filter: z.Filter}
	}
	d, err := NewDNSBL(env.Resolver, zones, o.Threshold)
	if err != nil {
		return nil, b.Errorf("", "%v", err)
	}
	return d, nil
}
