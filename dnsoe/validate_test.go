package dnsoe

import (
	"errors"
	"strings"
	"testing"
)

func TestTrustAnchorFiles(t *testing.T) {
	if _, err := ParseTrustAnchors(strings.NewReader("example.test. 300 IN A 192.0.2.1\n"), "f"); !errors.Is(err, ErrAnchors) {
		t.Errorf("an A record accepted as anchor: %v", err)
	}
	if _, err := ParseTrustAnchors(strings.NewReader("; nothing\n"), "f"); !errors.Is(err, ErrAnchors) {
		t.Errorf("an empty file accepted: %v", err)
	}
	if _, err := ParseTrustAnchors(strings.NewReader("example.test. IN DS garbage\n"), "f"); !errors.Is(err, ErrAnchors) {
		t.Errorf("garbage accepted: %v", err)
	}
	if _, err := LoadTrustAnchors("/nonexistent/anchors"); !errors.Is(err, ErrAnchors) {
		t.Errorf("missing file: %v", err)
	}
}

func FuzzTrustAnchors(f *testing.F) {
	f.Add("example.test. 300 IN DS 12345 13 2 0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\n")
	f.Fuzz(func(t *testing.T, s string) {
		ParseTrustAnchors(strings.NewReader(s), "fuzz")
	})
}
