package nft

import (
	"strings"
	"testing"
)

// wholeListing is what nft prints for the fixed part of a table we wrote
// with VXLAN on (rules that Intact does not look at left out).
const wholeListing = `table inet calico {
	comment "` + tableComment + `"
	chain vxlan-in {
		comment "VXLAN to this host: only from nodes, only inner sources they own"
		@th,96,16 0x800 ip saddr . @th,208,32 & 0xffffffc0 @vxlan-src-26 accept
		drop
	}

	chain wl-to-host {
		ct state established,related accept
		drop
	}

	chain from-wl-src {
		comment "anti-spoofing"
		type filter hook prerouting priority raw; policy accept;
		iifname != "cali*" accept
		drop
	}

	chain fwd-from-wl {
		type filter hook forward priority filter - 1; policy accept;
		iifname vmap @from-wl
		iifname "cali*" drop
	}

	chain fwd-to-wl {
		type filter hook forward priority filter; policy accept;
		oifname vmap @to-wl
		oifname "cali*" drop
	}

	chain input {
		type filter hook input priority filter; policy accept;
		meta nfproto ipv4 udp dport 4789 jump vxlan-in
		iifname "cali*" goto wl-to-host
		ip saddr 10.0.0.1 accept
	}
}
`

// TestTableState: only a table of ours with every catch-all in place is
// trusted to guard workloads (the policy gate keeps an earlier run's
// routes and tunnels only behind such a table).
func TestTableState(t *testing.T) {
	if st := tableState(wholeListing); !st.Whole || !st.VXLANGuarded {
		t.Fatalf("whole table judged %+v", st)
	}
	noVXLAN := strings.Replace(wholeListing, "\t\tdrop\n\t}\n\n\tchain wl-to-host", "\t}\n\n\tchain wl-to-host", 1)
	if st := tableState(noVXLAN); !st.Whole || st.VXLANGuarded {
		t.Errorf("table with an empty vxlan-in judged %+v", st)
	}
	for name, broken := range map[string]string{
		"not ours":           strings.Replace(wholeListing, tableComment, "somebody else's", 1),
		"no catch-all":       strings.Replace(wholeListing, "\t\toifname \"cali*\" drop\n", "", 1),
		"off its hook":       strings.Replace(wholeListing, "type filter hook prerouting priority raw; policy accept;\n", "", 1),
		"no wl-to-host jump": strings.Replace(wholeListing, "iifname \"cali*\" goto wl-to-host", "iifname \"cali*\" accept", 1),
		"chain gone":         strings.Replace(wholeListing, "chain fwd-to-wl {", "chain other {", 1),
		"empty":              "",
		"drop not last":      strings.Replace(wholeListing, "\t\tiifname \"cali*\" drop\n", "\t\tiifname \"cali*\" drop\n\t\taccept\n", 1),
	} {
		if st := tableState(broken); st.Whole || st.Why == "" {
			t.Errorf("%s: judged %+v", name, st)
		}
	}
}
