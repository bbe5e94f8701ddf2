// Package output prints lists the way operators expect: aligned tables for
// people, JSON or YAML for scripts.
package output

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"sigs.k8s.io/yaml"
)

// Format is one of table, json, yaml, wide.
type Format string

// Parse checks an -o value.
func Parse(s string) (Format, error) {
	switch f := Format(strings.ToLower(s)); f {
	case "", "table":
		return "table", nil
	case "json", "yaml", "wide":
		return f, nil
	}
	return "", fmt.Errorf("unknown output format %q: use table, wide, json or yaml", s)
}

// Table is rows under a header.
type Table struct {
	Header []string
	Rows   [][]string
}

// Add appends a row.
func (t *Table) Add(cells ...string) { t.Rows = append(t.Rows, cells) }

// Write prints the table aligned, header in capitals.
func (t *Table) Write(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, strings.ToUpper(strings.Join(t.Header, "\t")))
	for _, r := range t.Rows {
		fmt.Fprintln(tw, strings.Join(r, "\t"))
	}
	return tw.Flush()
}

// Print writes data as JSON or YAML, or the table for table/wide.
func Print(w io.Writer, f Format, data any, table func() *Table) error {
	switch f {
	case "json":
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(data)
	case "yaml":
		b, err := yaml.Marshal(data)
		if err != nil {
			return err
		}
		_, err = w.Write(b)
		return err
	}
	return table().Write(w)
}
