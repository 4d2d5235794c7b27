package gcm

import (
	"bytes"
	"syscall"
	"testing"
)

// TestGuardPage seals and opens messages that end where an unmapped page
// begins: the tails' masked loads and stores must not touch it.
func TestGuardPage(t *testing.T) {
	needWide(t)
	page := syscall.Getpagesize()
	mem, err := syscall.Mmap(-1, 0, 2*page, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_ANON|syscall.MAP_PRIVATE)
	if err != nil {
		t.Fatal(err)
	}
	defer syscall.Munmap(mem)
	if err := syscall.Mprotect(mem[page:], syscall.PROT_NONE); err != nil {
		t.Fatal(err)
	}
	g, std := newWide(make([]byte, 16)), stdGCM(t, make([]byte, 16))
	nonce := make([]byte, 12)
	for n := 0; n <= 600; n++ {
		pt := bytes.Repeat([]byte{byte(n)}, n)
		want := std.Seal(nil, nonce, pt, pt[:min(n, 20)])
		// The message and its tag end at the guard page; so does the
		// additional data, in a second pass.
		buf := mem[page-n-TagSize : page]
		copy(buf, pt)
		if got := g.Seal(buf[:0], nonce, buf[:n], pt[:min(n, 20)]); !bytes.Equal(got, want) {
			t.Fatalf("%d octets: Seal at the guard page differs", n)
		}
		if _, err := g.Open(buf[:0], nonce, buf, pt[:min(n, 20)]); err != nil {
			t.Fatalf("%d octets: Open at the guard page: %v", n, err)
		}
		// Additional data, plaintext and the opened plaintext, each
		// ending at the guard page.
		edge := mem[page-n : page]
		copy(edge, pt)
		if got := g.Seal(nil, nonce, nil, edge); !bytes.Equal(got, std.Seal(nil, nonce, nil, pt)) {
			t.Fatalf("%d octets of additional data at the guard page: Seal differs", n)
		}
		sealed := g.Seal(nil, nonce, edge, nil)
		if !bytes.Equal(sealed, std.Seal(nil, nonce, pt, nil)) {
			t.Fatalf("%d octets of plaintext at the guard page: Seal differs", n)
		}
		clear(edge)
		if got, err := g.Open(edge[:0], nonce, sealed, nil); err != nil || !bytes.Equal(got, pt) {
			t.Fatalf("%d octets opened to the guard page: %v", n, err)
		}
	}
}
