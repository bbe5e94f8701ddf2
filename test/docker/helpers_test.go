package docker

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"testing"
	"time"
)

type errString string

func (e errString) Error() string { return string(e) }

func statMode(p string) (os.FileMode, error) {
	fi, err := os.Stat(p)
	if err != nil {
		return 0, err
	}
	return fi.Mode().Perm(), nil
}

// endpointIPErr is the first address of the workload's endpoint on host.
func (dw *dockerWorld) endpointIPErr(host, workload string) (string, error) {
	out, err := dw.ctl(nil, host, "endpoint", "show", "-o", "json")
	if err != nil {
		return "", fmt.Errorf("endpoint show: %v: %s", err, out)
	}
	var eps []struct {
		Node     string   `json:"node"`
		Workload string   `json:"workload"`
		IPv4Nets []string `json:"ipv4Nets"`
	}
	if err := json.Unmarshal([]byte(out), &eps); err != nil {
		return "", fmt.Errorf("endpoint show -o json: %v: %s", err, out)
	}
	for _, ep := range eps {
		if ep.Node == host && ep.Workload == workload && len(ep.IPv4Nets) > 0 {
			p, err := netip.ParsePrefix(ep.IPv4Nets[0])
			if err != nil {
				return "", err
			}
			return p.Addr().String(), nil
		}
	}
	return "", fmt.Errorf("no endpoint %s on %s", workload, host)
}

func (dw *dockerWorld) endpointIP(t *testing.T, host, workload string) string {
	t.Helper()
	var ip string
	waitFor(t, 15*time.Second, "endpoint of "+workload, func() (err error) {
		ip, err = dw.endpointIPErr(host, workload)
		return err
	})
	return ip
}

func (dw *dockerWorld) noEndpoint(host, workload string) error {
	if _, err := dw.endpointIPErr(host, workload); err == nil {
		return fmt.Errorf("endpoint %s still on %s", workload, host)
	}
	return nil
}

// expectAssigned checks IPAM's view of one address now.
func (dw *dockerWorld) expectAssigned(t *testing.T, ip string, want bool) {
	t.Helper()
	if got, out := dw.assigned(t, ip); got != want {
		t.Errorf("address %s assigned=%v, want %v; ipam info: %s", ip, got, want, out)
	}
}

// awaitReleased waits for the agent to release ip after it removed a
// workload on its own (a container's event): the endpoint record goes
// first, then the interface, and the address last, so that it is never
// handed out while the old interface still holds it.
func (dw *dockerWorld) awaitReleased(t *testing.T, ip string) {
	t.Helper()
	waitFor(t, 10*time.Second, "address "+ip+" released", func() error {
		if got, out := dw.assigned(t, ip); got {
			return errString("still assigned: " + out)
		}
		return nil
	})
}

func (dw *dockerWorld) assigned(t *testing.T, ip string) (bool, string) {
	t.Helper()
	out, err := dw.ctl(t, "host1", "ipam", "info", ip, "-o", "json")
	var info struct{ Assigned bool }
	if err != nil || json.Unmarshal([]byte(out), &info) != nil {
		t.Fatalf("ipam info %s: %v: %s", ip, err, out)
	}
	return info.Assigned, out
}

// iperf3 measures one TCP stream from the namespace at client to server's
// address ip (server's namespace at serverNs), in Gbit/s.
func iperf3(t *testing.T, serverNs, clientNs, ip string, seconds int) float64 {
	t.Helper()
	srv := exec.Command("nsenter", "--net="+serverNs, "--", "iperf3", "-s", "-p", "5299")
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		srv.Process.Kill()
		srv.Wait()
	}()
	var last string
	for range 50 { // until the server listens and a run moves bytes
		ctx, cancel := context.WithTimeout(context.Background(), time.Duration(seconds+20)*time.Second)
		out, err := exec.CommandContext(ctx, "nsenter", "--net="+clientNs, "--", "iperf3", "-J", "-c", ip, "-p", "5299", "-t", fmt.Sprint(seconds)).Output()
		cancel()
		var res struct {
			Error string `json:"error"`
			End   struct {
				SumReceived struct {
					Bytes         float64 `json:"bytes"`
					BitsPerSecond float64 `json:"bits_per_second"`
				} `json:"sum_received"`
			} `json:"end"`
		}
		if jerr := json.Unmarshal(out, &res); err == nil && jerr == nil && res.End.SumReceived.Bytes > 0 {
			return res.End.SumReceived.BitsPerSecond / 1e9
		}
		last = fmt.Sprintf("%v %s", err, res.Error)
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("iperf3 to %s moved no bytes: %s", ip, last)
	return 0
}
