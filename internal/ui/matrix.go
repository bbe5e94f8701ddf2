package ui

import (
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"strconv"

	"github.com/calico-go/calico/internal/client"
)

const (
	// DefaultPort is the TCP port the matrix asks about unless the page's
	// ?port= says otherwise: the one web servers listen on.
	DefaultPort uint16 = 80
	// MaxMatrix bounds the matrix: n workloads cost n*(n-1)*2 questions on
	// every change, and a grid wider than this is unreadable anyway.
	MaxMatrix = 40
)

// Matrix is the who-can-reach-whom grid of all workloads: Rows[i][j] is
// traffic from Workloads[i] to Workloads[j]. Every verdict is
// client.Model.Why's, the answer `calicoctl why` prints, computed by the
// code that renders nftables; nothing here evaluates policy.
type Matrix struct {
	Port      uint16
	Workloads []string
	Rows      [][]Cell
	// Skipped says why there is no grid (too many workloads), or "".
	Skipped string
}

// Cell is one ordered pair of workloads; Self on the diagonal, where a
// workload talks to itself without leaving its namespace.
type Cell struct {
	From, To  string
	Self      bool
	ICMP, TCP Verdict
}

// Verdict is one question's answer in brief.
type Verdict struct {
	Proto   string // what was asked: "icmp" or "tcp/PORT"
	Verdict string // "allowed" or "denied"; "" when Why could not answer
	Err     string // why it could not
	Explain string // the URL of the explanation page
}

// buildMatrix asks m about every ordered pair of its workloads: an ICMP
// echo and a new TCP flow to port.
func buildMatrix(m *client.Model, port uint16) Matrix {
	mx := Matrix{Port: port, Workloads: m.Workloads()}
	if n := len(mx.Workloads); n > MaxMatrix {
		mx.Skipped = fmt.Sprintf("%d workloads: the matrix is drawn for at most %d; ask about a pair with `calicoctl why SRC DST`.", n, MaxMatrix)
		mx.Workloads = nil
		return mx
	}
	for _, from := range mx.Workloads {
		row := make([]Cell, 0, len(mx.Workloads))
		for _, to := range mx.Workloads {
			c := Cell{From: from, To: to, Self: from == to}
			if !c.Self {
				c.ICMP = ask(m, client.WhyRequest{Src: from, Dst: to, Proto: "icmp"})
				c.TCP = ask(m, client.WhyRequest{Src: from, Dst: to, Proto: "tcp", Port: port})
			}
			row = append(row, c)
		}
		mx.Rows = append(mx.Rows, row)
	}
	return mx
}

func ask(m *client.Model, req client.WhyRequest) Verdict {
	v := Verdict{Proto: req.Proto, Explain: whyURL(req)}
	if req.Port != 0 {
		v.Proto += "/" + strconv.Itoa(int(req.Port))
	}
	a, err := m.Why(req)
	if err != nil {
		v.Err = err.Error()
		return v
	}
	v.Verdict = a.Verdict
	return v
}

// whyURL is the explanation page's address for req, relative to the page.
func whyURL(req client.WhyRequest) string {
	q := url.Values{"src": {req.Src}, "dst": {req.Dst}, "proto": {req.Proto}}
	if req.Port != 0 {
		q.Set("port", strconv.Itoa(int(req.Port)))
	}
	return "why?" + q.Encode()
}

// parsePort reads the page's ?port=: DefaultPort when absent.
func parsePort(r *http.Request) (uint16, error) {
	s := r.URL.Query().Get("port")
	if s == "" {
		return DefaultPort, nil
	}
	p, err := strconv.ParseUint(s, 10, 16)
	if err != nil || p == 0 {
		return 0, errors.New("port must be a TCP port number, 1 to 65535")
	}
	return uint16(p), nil
}

// maxParty bounds a question's end as the page accepts it: workload keys,
// addresses and "outside" are all far shorter.
const maxParty = 300

// whyRequest reads the explanation page's question. It accepts only what
// the matrix links to or a person could mean: a workload the model knows
// (NODE/NAME), an IP address, or outside; tcp or udp with a port, or icmp.
func whyRequest(r *http.Request, m *client.Model) (client.WhyRequest, error) {
	q := r.URL.Query()
	req := client.WhyRequest{Proto: q.Get("proto")}
	known := m.Workloads()
	party := func(what, s string) (string, error) {
		if s == "outside" || slices.Contains(known, s) {
			return s, nil
		}
		if len(s) <= maxParty {
			if a, err := netip.ParseAddr(s); err == nil {
				return a.Unmap().String(), nil
			}
		}
		return "", fmt.Errorf("%s %q is not a workload of this network (NODE/NAME, as the matrix names them), an IP address, or outside", what, s)
	}
	var err error
	if req.Src, err = party("src", q.Get("src")); err != nil {
		return req, err
	}
	if req.Dst, err = party("dst", q.Get("dst")); err != nil {
		return req, err
	}
	switch req.Proto {
	case "icmp":
		if q.Get("port") != "" {
			return req, errors.New("port goes with proto=tcp or udp, not icmp")
		}
	case "tcp", "udp":
		p, err := strconv.ParseUint(q.Get("port"), 10, 16)
		if err != nil || p == 0 {
			return req, fmt.Errorf("proto=%s needs port=N (1-65535)", req.Proto)
		}
		req.Port = uint16(p)
	default:
		return req, errors.New("proto must be icmp, tcp or udp")
	}
	return req, nil
}
