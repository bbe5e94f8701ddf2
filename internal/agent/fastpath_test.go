package agent

import (
	"strings"
	"testing"
)

// TestFastpathSetting: the fast path is on unless CALICO_FASTPATH=off, and
// a value that is neither is refused with a line naming the variable and
// what it takes, not read as either.
func TestFastpathSetting(t *testing.T) {
	for v, want := range map[string]bool{"": true, "on": true, "off": false} {
		got, err := fastpathSetting(v)
		if err != nil || got != want {
			t.Errorf("CALICO_FASTPATH=%q: %v, %v; want %v", v, got, err, want)
		}
	}
	for _, v := range []string{"yes", "OFF", "0", "of"} {
		_, err := fastpathSetting(v)
		if err == nil || !strings.Contains(err.Error(), "CALICO_FASTPATH") || !strings.Contains(err.Error(), "on (the default) or off") {
			t.Errorf("CALICO_FASTPATH=%q: %v, want an error naming the variable and its values", v, err)
		}
	}
}
