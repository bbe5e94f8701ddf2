package lab

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// Require checks that commands are on PATH and names the missing ones.
func Require(cmds ...string) error {
	var missing []string
	for _, c := range cmds {
		if _, err := exec.LookPath(c); err != nil {
			missing = append(missing, c)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("lab: missing command(s) %s: run scripts/install-deps.sh as root", strings.Join(missing, ", "))
	}
	return nil
}

// PingResult is what ping reported.
type PingResult struct {
	Sent, Received int
	AvgRTT         time.Duration // zero when nothing came back
}

var (
	pingCountRE = regexp.MustCompile(`(\d+) packets transmitted, (\d+) (?:packets )?received`)
	pingRTTRE   = regexp.MustCompile(`= [\d.]+/([\d.]+)/`)
)

// Ping sends count echo requests from the namespace to addr (IPv4 or IPv6),
// 0.2 s apart, waiting up to timeout for each reply. Lost replies are not an
// error: check Received. The error is for ping failing to run, or refusing
// to send (for example "Network is unreachable": no route). Bounded by ctx
// and, at most, by the time count pings and timeout need plus slack.
func Ping(ctx context.Context, from *Netns, to netip.Addr, count int, timeout time.Duration) (PingResult, error) {
	if count < 1 {
		count = 1
	}
	if timeout <= 0 {
		timeout = time.Second
	}
	bound := time.Duration(count)*200*time.Millisecond + timeout + 3*time.Second
	ctx, cancel := context.WithTimeout(ctx, bound)
	defer cancel()
	out, err := from.Run(ctx, "ping", "-n", "-q", "-c", strconv.Itoa(count), "-i", "0.2",
		"-W", fmt.Sprintf("%.3f", timeout.Seconds()), to.String())
	res, perr := parsePing(out)
	if perr != nil {
		if err != nil {
			return res, err
		}
		return res, perr
	}
	// Exit 1 means "some replies missing": a result, not a failure.
	var ee *exec.ExitError
	if err != nil && !(errors.As(err, &ee) && ee.ExitCode() == 1) {
		return res, err
	}
	return res, nil
}

func parsePing(out string) (PingResult, error) {
	var r PingResult
	m := pingCountRE.FindStringSubmatch(out)
	if m == nil {
		return r, fmt.Errorf("lab: no ping statistics in %q", strings.TrimSpace(out))
	}
	r.Sent, _ = strconv.Atoi(m[1])
	r.Received, _ = strconv.Atoi(m[2])
	if m := pingRTTRE.FindStringSubmatch(out); m != nil {
		ms, _ := strconv.ParseFloat(m[1], 64)
		r.AvgRTT = time.Duration(ms * float64(time.Millisecond))
	}
	return r, nil
}

// Reachable reports whether one echo reply comes back within about two
// seconds: ping keeps sending every 0.2 s until the first reply, so ARP and
// route set-up delays do not count as failure, and success returns early.
func Reachable(ctx context.Context, from *Netns, to netip.Addr) bool {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	out, err := from.Run(ctx, "ping", "-n", "-q", "-c", "1", "-i", "0.2", "-w", "2", to.String())
	if err != nil {
		return false
	}
	r, err := parsePing(out)
	return err == nil && r.Received > 0
}

// TCPConnect opens (and closes) a TCP connection from the namespace to addr.
// The socket is created inside the namespace; nothing is sent.
func TCPConnect(ctx context.Context, from *Netns, to netip.AddrPort, timeout time.Duration) error {
	if timeout <= 0 {
		timeout = 3 * time.Second
	}
	return from.Do(func() error {
		d := net.Dialer{Timeout: timeout}
		c, err := d.DialContext(ctx, "tcp", to.String())
		if err != nil {
			return err
		}
		return c.Close()
	})
}

// Iperf3Result is iperf3's summary, measured at the receiver.
type Iperf3Result struct {
	Gbps        float64
	Retransmits int
	Seconds     float64
	// CPUmsPerGB is the CPU time client and server used together (their
	// own getrusage, as iperf3 reports it: user, system and the softirq
	// work the kernel ran on their behalf, which includes forwarding the
	// packets through every namespace on the way) per gigabyte received,
	// in milliseconds. On a loaded machine it varies far less than Gbps:
	// waiting for a CPU costs throughput but no CPU time.
	CPUmsPerGB float64
}

// Iperf3 measures TCP throughput from client to an iperf3 server started
// (one-off, -1) in the server namespace on a free port, with streams
// parallel streams for seconds seconds. The server is stopped afterwards
// whatever happens; the whole run is bounded by seconds plus 30 s.
func Iperf3(ctx context.Context, server, client *Netns, serverIP netip.Addr, seconds, streams int) (Iperf3Result, error) {
	if err := Require("iperf3"); err != nil {
		return Iperf3Result{}, err
	}
	if seconds < 1 {
		seconds = 1
	}
	if streams < 1 {
		streams = 1
	}
	ctx, cancel := context.WithTimeout(ctx, time.Duration(seconds)*time.Second+30*time.Second)
	defer cancel()

	port, err := freePort(server)
	if err != nil {
		return Iperf3Result{}, err
	}
	srv, err := server.Start("iperf3", "-s", "-1", "-p", strconv.Itoa(port))
	if err != nil {
		return Iperf3Result{}, err
	}
	defer srv.Stop()
	if err := waitListening(ctx, server, port, srv); err != nil {
		return Iperf3Result{}, fmt.Errorf("lab: iperf3 server in %s: %w; log: %s", server.Name, err, srv.Log())
	}
	out, runErr := client.Run(ctx, "iperf3", "-J", "-c", serverIP.String(), "-p", strconv.Itoa(port),
		"-t", strconv.Itoa(seconds), "-P", strconv.Itoa(streams), "--connect-timeout", "3000")
	res, err := parseIperf3(out)
	if err != nil {
		if runErr != nil {
			return res, runErr
		}
		return res, err
	}
	return res, nil
}

func parseIperf3(out string) (Iperf3Result, error) {
	// `ip netns exec` may print nothing else, but be lenient about text
	// before the JSON object.
	if i := strings.IndexByte(out, '{'); i > 0 {
		out = out[i:]
	}
	var j struct {
		End struct {
			SumSent struct {
				Retransmits int `json:"retransmits"`
			} `json:"sum_sent"`
			SumReceived struct {
				Seconds       float64 `json:"seconds"`
				Bytes         float64 `json:"bytes"`
				BitsPerSecond float64 `json:"bits_per_second"`
			} `json:"sum_received"`
			CPU struct {
				Host   float64 `json:"host_total"`   // client, % of one CPU
				Remote float64 `json:"remote_total"` // server
			} `json:"cpu_utilization_percent"`
		} `json:"end"`
		Error string `json:"error"`
	}
	if err := json.Unmarshal([]byte(out), &j); err != nil {
		return Iperf3Result{}, fmt.Errorf("lab: iperf3 output is not JSON: %v: %.500s", err, out)
	}
	if j.Error != "" {
		return Iperf3Result{}, fmt.Errorf("lab: iperf3: %s", j.Error)
	}
	r := Iperf3Result{
		Gbps:        j.End.SumReceived.BitsPerSecond / 1e9,
		Retransmits: j.End.SumSent.Retransmits,
		Seconds:     j.End.SumReceived.Seconds,
	}
	if r.Seconds == 0 {
		return r, errors.New("lab: iperf3 reported no data received")
	}
	if gb := j.End.SumReceived.Bytes / 1e9; gb > 0 {
		r.CPUmsPerGB = (j.End.CPU.Host + j.End.CPU.Remote) / 100 * r.Seconds * 1000 / gb
	}
	return r, nil
}

// freePort asks the namespace's kernel for an unused TCP port. Another
// process could take it before iperf3 binds it; inside a lab namespace
// nothing else is picking ports, so that race is theoretical.
func freePort(ns *Netns) (int, error) {
	var port int
	err := ns.Do(func() error {
		ln, err := net.Listen("tcp", "[::]:0")
		if err != nil {
			ln, err = net.Listen("tcp4", "0.0.0.0:0")
			if err != nil {
				return err
			}
		}
		port = ln.Addr().(*net.TCPAddr).Port
		return ln.Close()
	})
	return port, err
}

// waitListening polls the namespace's TCP tables until something listens on
// port. Probing with a connection would use up iperf3's one-off (-1) session.
func waitListening(ctx context.Context, ns *Netns, port int, p *Proc) error {
	for {
		ok, err := listening(ns, port)
		if err != nil {
			return err
		}
		if ok {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-p.Done():
			return fmt.Errorf("exited before listening: %v", p.Wait())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// Listening reads the namespace's TCP tables: does something listen on
// port? (A probe connection would count as a client to servers like iperf3.)
func (ns *Netns) Listening(port int) (bool, error) { return listening(ns, port) }

func listening(ns *Netns, port int) (bool, error) {
	want := fmt.Sprintf(":%04X ", port)
	found := false
	err := ns.Do(func() error {
		// thread-self: /proc/self/net would show the namespace of the
		// process's main thread, not of this one.
		for _, f := range []string{"/proc/thread-self/net/tcp", "/proc/thread-self/net/tcp6"} {
			fh, err := os.Open(f)
			if err != nil {
				continue
			}
			sc := bufio.NewScanner(fh)
			for sc.Scan() {
				fields := strings.Fields(sc.Text())
				// local_address is fields[1], st is fields[3]; 0A = LISTEN.
				if len(fields) > 3 && strings.HasSuffix(fields[1]+" ", want) && fields[3] == "0A" {
					found = true
				}
			}
			fh.Close()
		}
		return nil
	})
	return found, err
}
