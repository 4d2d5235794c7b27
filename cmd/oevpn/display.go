package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf16"
	"unicode/utf8"
)

// Peer-supplied text (certificate DNs, contact details, IKE identities,
// anything a daemon error quotes) reaches a person's terminal only
// through printable, or writeJSON: a peer must not be able to drive the
// terminal (ESC, CSI, OSC, BEL), forge lines or columns (newline, tab),
// or reorder what is shown (bidirectional overrides). Log lines need no
// help: log/slog's text handler quotes such values itself.

// printable returns s fit for a terminal: printable runes of any script,
// and spaces, as they are; control characters (C0, DEL, C1), other
// non-printable runes (format characters such as U+202E) and invalid
// UTF-8 escaped as Go writes them (\x1b, \a, \n, \u202e).
func printable(s string) string {
	clean := true
	for _, r := range s {
		if !showable(r) {
			clean = false
			break
		}
	}
	if clean {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && n == 1:
			fmt.Fprintf(&b, `\x%02x`, s[i])
		case showable(r):
			b.WriteString(s[i : i+n])
		default:
			q := strconv.QuoteRuneToASCII(r)
			b.WriteString(q[1 : len(q)-1])
		}
		i += n
	}
	return b.String()
}

// showable reports whether r is shown as it is.
func showable(r rune) bool {
	return r == ' ' || r != utf8.RuneError && unicode.IsPrint(r)
}

// writeJSON writes v as JSON for a terminal or a program. encoding/json
// escapes C0 controls, U+2028 and U+2029, and replaces invalid UTF-8, but
// leaves DEL, the C1 controls (U+009B is a one-character CSI) and format
// characters (U+202E) raw; every rune printable would escape is written
// as a \u escape here (outside strings JSON has only spaces and
// newlines), which any JSON reader decodes to the same string.
func writeJSON(w io.Writer, v any, indent bool) error {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	if indent {
		enc.SetIndent("", "  ")
	}
	if err := enc.Encode(v); err != nil {
		return err
	}
	b := buf.Bytes()
	out := make([]byte, 0, len(b))
	for i := 0; i < len(b); {
		r, n := utf8.DecodeRune(b[i:])
		switch {
		case r == '\n' || showable(r):
			out = append(out, b[i:i+n]...)
		case r > 0xffff:
			r1, r2 := utf16.EncodeRune(r)
			out = fmt.Appendf(out, `\u%04x\u%04x`, r1, r2)
		default:
			out = fmt.Appendf(out, `\u%04x`, r)
		}
		i += n
	}
	_, err := w.Write(out)
	return err
}
