package faults

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/calico-go/calico/internal/e2etest"
	"github.com/calico-go/calico/internal/lab"
)

// iperfPort is where the stream's server listens, in a workload namespace
// of our own where nothing else listens.
const iperfPort = 5201

// streamResult is one long iperf3 TCP stream, as its client saw it.
type streamResult struct {
	Err         error     // iperf3 failed: the connection broke or never opened
	Intervals   []float64 // bytes sent in each 1 s interval
	Bytes       float64   // bytes the server received in all
	Retransmits int
}

// minInterval is the smallest 1 s interval, in bytes.
func (r streamResult) minInterval() float64 {
	if len(r.Intervals) == 0 {
		return 0
	}
	m := r.Intervals[0]
	for _, b := range r.Intervals {
		m = min(m, b)
	}
	return m
}

// zeroIntervals counts the seconds in which nothing moved.
func (r streamResult) zeroIntervals() int {
	n := 0
	for _, b := range r.Intervals {
		if b == 0 {
			n++
		}
	}
	return n
}

// startStream runs one iperf3 TCP connection from client to server (at ip)
// for seconds, paced at 200 Mbit/s so the agents being tested keep their
// share of the machine's two cores. The result arrives on the channel.
func startStream(t *testing.T, ctx context.Context, server, client *lab.Netns, ip netip.Addr, seconds int) <-chan streamResult {
	t.Helper()
	srv, err := server.Start("iperf3", "-s", "-p", strconv.Itoa(iperfPort))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Stop() })
	deadline := time.Now().Add(10 * time.Second)
	for {
		ok, err := server.Listening(iperfPort)
		if err != nil {
			t.Fatal(err)
		}
		if ok {
			break
		}
		if time.Now().After(deadline) || srv.Exited() {
			t.Fatalf("iperf3 server in %s not listening: %s", server.Name, srv.Log())
		}
		time.Sleep(20 * time.Millisecond)
	}
	res := make(chan streamResult, 1)
	go func() {
		rctx, cancel := context.WithTimeout(ctx, time.Duration(seconds+30)*time.Second)
		defer cancel()
		out, err := client.Run(rctx, "iperf3", "-J", "-c", ip.String(), "-p", strconv.Itoa(iperfPort),
			"-t", strconv.Itoa(seconds), "-i", "1", "-b", "200M", "--connect-timeout", "3000")
		r := parseStream(out)
		if err != nil && r.Err == nil {
			r.Err = err
		}
		res <- r
	}()
	return res
}

func parseStream(out string) streamResult {
	if i := strings.IndexByte(out, '{'); i > 0 {
		out = out[i:]
	}
	var j struct {
		Intervals []struct {
			Sum struct {
				Bytes float64 `json:"bytes"`
			} `json:"sum"`
		} `json:"intervals"`
		End struct {
			SumSent struct {
				Retransmits int `json:"retransmits"`
			} `json:"sum_sent"`
			SumReceived struct {
				Bytes float64 `json:"bytes"`
			} `json:"sum_received"`
		} `json:"end"`
		Error string `json:"error"`
	}
	if err := json.Unmarshal([]byte(out), &j); err != nil {
		return streamResult{Err: fmt.Errorf("iperf3 output is not JSON: %v: %.300s", err, out)}
	}
	r := streamResult{Bytes: j.End.SumReceived.Bytes, Retransmits: j.End.SumSent.Retransmits}
	for _, iv := range j.Intervals {
		r.Intervals = append(r.Intervals, iv.Sum.Bytes)
	}
	if j.Error != "" {
		r.Err = errors.New("iperf3: " + j.Error)
	}
	return r
}

// pingRun pings for about d (5 per second) in the background. Unlike
// lab.Ping it allows the run half as long again as planned, since pacing
// slips when the machine's two cores are busy.
func pingRun(ctx context.Context, from *lab.Netns, to netip.Addr, d time.Duration) <-chan pingOutcome {
	ch := make(chan pingOutcome, 1)
	go func() {
		ctx, cancel := context.WithTimeout(ctx, d*3/2+10*time.Second)
		defer cancel()
		count := int(d / (200 * time.Millisecond))
		out, err := from.Run(ctx, "ping", "-n", "-q", "-c", strconv.Itoa(count), "-i", "0.2", "-W", "1", to.String())
		var r pingOutcome
		var ok bool
		if r.Sent, r.Received, ok = e2etest.PingStats(out); !ok {
			r.err = fmt.Errorf("no ping statistics: %v", err)
		}
		ch <- r
	}()
	return ch
}

type pingOutcome struct {
	Sent, Received int
	err            error
}
