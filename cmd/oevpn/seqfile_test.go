package main

import (
	"os"
	"strings"
	"testing"
)

// TestSeqFile round-trips a reservation, keeps it per key, and refuses to
// start over from a damaged file.
func TestSeqFile(t *testing.T) {
	dir := t.TempDir()
	f, err := newSeqFile(dir, []byte("key one"))
	if err != nil {
		t.Fatal(err)
	}
	if v, err := f.Reserved(); err != nil || v != 0 {
		t.Fatalf("new key: %d, %v", v, err)
	}
	if err := f.Reserve(1 << 40); err != nil {
		t.Fatal(err)
	}
	if v, err := f.Reserved(); err != nil || v != 1<<40 {
		t.Fatalf("after Reserve: %d, %v", v, err)
	}
	if _, err := newSeqFile(dir, []byte("key one")); err == nil || !strings.Contains(err.Error(), "in use by another oevpn") {
		t.Fatalf("the same key twice: %v", err)
	}
	g, _ := newSeqFile(dir, []byte("key two"))
	if v, _ := g.Reserved(); v != 0 || g.path == f.path {
		t.Fatalf("another key shares the file: %d %s", v, g.path)
	}
	if fi, err := os.Stat(f.path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("sequence file: %v %v, want mode 0600", fi.Mode(), err)
	}
	os.WriteFile(f.path, []byte("oevpn-esp-seq 12x\n"), 0o600)
	if _, err := f.Reserved(); err == nil || !strings.Contains(err.Error(), "damaged") {
		t.Fatalf("damaged file: %v", err)
	}
}
