package resource

import (
	"strings"
	"testing"
	"time"
)

// TestDeepNestingRefusedBeforeParsing: the YAML parser took 58 s over
// 100000 nested "[" (200 KB) before refusing them, and agents decoded
// policy records with it. Deep flow collections, mappings and one-line
// sequences are refused by a scan first; brackets and dashes in quotes
// and comments do not count.
func TestDeepNestingRefusedBeforeParsing(t *testing.T) {
	head := `{"apiVersion":"projectcalico.org/v3","kind":"GlobalNetworkPolicy","metadata":{"name":"p"},"spec":`
	yamlHead := "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata:\n  name: p\nspec:\n  ingress:\n  "
	for name, v := range map[string]string{
		"flow sequences": head + `{"ingress":` + strings.Repeat("[", 100000) + strings.Repeat("]", 100000) + `}}`,
		"flow mappings":  head + strings.Repeat(`{"a":`, 100000) + "1" + strings.Repeat("}", 100000) + `}`,
		"dashes":         yamlHead + strings.Repeat("- ", 100000) + "x\n",
	} {
		start := time.Now()
		_, err := Decode([]byte(v))
		if err == nil || !strings.Contains(err.Error(), "levels deep") {
			t.Errorf("%s: %d bytes: err = %v (after %v)", name, len(v), err, time.Since(start))
		}
	}
	honest := yamlHead + "- action: Allow # [[[[ {{{{ " + strings.Repeat("[", 2000) + "\n" +
		"    source: {selector: \"a == '" + strings.Repeat("{", 2000) + "'\"}\n" +
		"  - action: Deny\n    destination: {nets: ['10.0.0.0/8']}\n"
	if _, err := Decode([]byte(honest)); err != nil && strings.Contains(err.Error(), "levels deep") {
		t.Errorf("brackets in comments and quotes counted: %v", err)
	}
}
