package resource

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
)

// Protocol is a protocol by name (TCP, UDP, ICMP, ICMPv6, SCTP, UDPLite,
// any case) or number (1-255), as Calico writes it: a string or an integer.
type Protocol struct {
	Name   string // canonical name when known ("TCP"), else ""
	Number uint8  // IANA number; 0 only when unset
	// bad is why the document's value is not a protocol: decoding keeps
	// going so that validation can report it at the field's position.
	bad string
}

var protocolNumbers = map[string]uint8{
	"TCP": 6, "UDP": 17, "ICMP": 1, "ICMPV6": 58, "SCTP": 132, "UDPLITE": 136,
}

var protocolNames = map[uint8]string{6: "TCP", 17: "UDP", 1: "ICMP", 58: "ICMPv6", 132: "SCTP", 136: "UDPLite"}

// ParseProtocol reads a protocol name or number.
func ParseProtocol(s string) (Protocol, error) {
	if n, err := strconv.Atoi(s); err == nil {
		if n < 1 || n > 255 {
			return Protocol{}, fmt.Errorf("protocol number %d is outside 1-255", n)
		}
		return Protocol{Name: protocolNames[uint8(n)], Number: uint8(n)}, nil
	}
	if n, ok := protocolNumbers[strings.ToUpper(s)]; ok {
		return Protocol{Name: protocolNames[n], Number: n}, nil
	}
	return Protocol{}, fmt.Errorf("unknown protocol %q: want TCP, UDP, ICMP, ICMPv6, SCTP, UDPLite or a number 1-255", s)
}

// HasPorts says whether ports can be matched for this protocol.
func (p Protocol) HasPorts() bool {
	return p.Number == 6 || p.Number == 17 || p.Number == 132 || p.Number == 136
}

func (p Protocol) String() string {
	if p.Name != "" {
		return p.Name
	}
	return strconv.Itoa(int(p.Number))
}

// MarshalJSON writes the name when there is one, else the number.
func (p Protocol) MarshalJSON() ([]byte, error) {
	if p.Name != "" {
		return json.Marshal(p.Name)
	}
	return json.Marshal(int(p.Number))
}

// UnmarshalJSON reads a string or an integer.
func (p *Protocol) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		var n int
		if err := json.Unmarshal(b, &n); err != nil {
			return fmt.Errorf("protocol must be a name or a number, not %s", b)
		}
		s = strconv.Itoa(n)
	}
	v, err := ParseProtocol(s)
	if err != nil {
		v.bad = err.Error()
	}
	*p = v
	return nil
}

// Port is one port, or an inclusive range "min:max", as Calico writes them
// (an integer or a string). Named ports are not supported: endpoints here
// declare none.
type Port struct {
	Min, Max uint16
	bad      string // as Protocol.bad
}

// ParsePort reads "80", "8080:8090".
func ParsePort(s string) (Port, error) {
	lo, hi, isRange := strings.Cut(s, ":")
	a, err := portNumber(lo)
	if err != nil {
		return Port{}, err
	}
	if !isRange {
		return Port{Min: a, Max: a}, nil
	}
	b, err := portNumber(hi)
	if err != nil {
		return Port{}, err
	}
	if b < a {
		return Port{}, fmt.Errorf("port range %q: the first port is above the second", s)
	}
	return Port{Min: a, Max: b}, nil
}

func portNumber(s string) (uint16, error) {
	n, err := strconv.Atoi(s)
	if err != nil {
		if s != "" && strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-") == "" {
			return 0, fmt.Errorf("named port %q is not supported: give a number or a range like 8080:8090", s)
		}
		return 0, fmt.Errorf("port %q: want a number 0-65535 or a range like 8080:8090", s)
	}
	if n < 0 || n > 65535 {
		return 0, fmt.Errorf("port %d is outside 0-65535", n)
	}
	return uint16(n), nil
}

func (p Port) String() string {
	if p.Min == p.Max {
		return strconv.Itoa(int(p.Min))
	}
	return strconv.Itoa(int(p.Min)) + ":" + strconv.Itoa(int(p.Max))
}

// MarshalJSON writes a single port as an integer, a range as a string.
func (p Port) MarshalJSON() ([]byte, error) {
	if p.Min == p.Max {
		return json.Marshal(int(p.Min))
	}
	return json.Marshal(p.String())
}

// UnmarshalJSON reads an integer or a string.
func (p *Port) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		var n int
		if err := json.Unmarshal(b, &n); err != nil {
			return fmt.Errorf("port must be a number or a string like \"8080:8090\", not %s", b)
		}
		s = strconv.Itoa(n)
	}
	v, err := ParsePort(s)
	if err != nil {
		v.bad = err.Error()
	}
	*p = v
	return nil
}
