package dnsname

import (
	"slices"
	"testing"
)

// TestCompare: the example order of RFC 4034 §6.1.
func TestCompare(t *testing.T) {
	want := []string{"example.", "a.example.", "yljkjljk.a.example.", "Z.a.example.", "zABC.a.EXAMPLE.", "z.example.",
		"\\001.z.example.", "*.z.example.", "\\200.z.example."}
	got := slices.Clone(want)
	slices.Reverse(got)
	slices.SortStableFunc(got, Compare)
	if !slices.Equal(got, want) {
		t.Fatalf("canonical order\n got %q\nwant %q", got, want)
	}
	if Compare("A.example.", "a.EXAMPLE") != 0 {
		t.Error("case matters")
	}
}
