package main

import (
	"fmt"
	"strings"
)

// takeGlobalFlags pulls the root's flags out of the raw arguments of the
// commands that parse their own (profile and container put a name before
// the verb, which cobra cannot express): --etcd-endpoints and -o/--output,
// as "--flag VALUE" or "--flag=VALUE", anywhere on the line.
func takeGlobalFlags(args []string) ([]string, error) {
	var rest []string
	for i := 0; i < len(args); i++ {
		a := args[i]
		var target *string
		name, value, hasValue := strings.Cut(a, "=")
		switch name {
		case "--etcd-endpoints":
			target = &etcdEndpoints
		case "-o", "--output":
			target = &outputFormat
		default:
			rest = append(rest, a)
			continue
		}
		if !hasValue {
			if i+1 >= len(args) {
				return nil, fmt.Errorf("%s needs a value", name)
			}
			i++
			value = args[i]
		}
		*target = value
	}
	return rest, nil
}
