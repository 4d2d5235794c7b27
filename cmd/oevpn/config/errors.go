package config

import (
	"errors"
	"fmt"
	"reflect"
	"strconv"
	"strings"

	"github.com/BurntSushi/toml"
)

// Error is a configuration error located in a file.
type Error struct {
	File string
	Line int    // 0 if unknown
	Key  string // dotted key, e.g. "sa[1].spi_in"
	Err  error
}

func (e *Error) Error() string {
	loc := e.File
	if e.Line > 0 {
		loc += ":" + strconv.Itoa(e.Line)
	}
	if e.Key != "" {
		return fmt.Sprintf("%s: %s: %v", loc, e.Key, e.Err)
	}
	return fmt.Sprintf("%s: %v", loc, e.Err)
}

func (e *Error) Unwrap() error { return e.Err }

// decodeError turns an error of the TOML decoder into one that names the
// file, line and key, the value, and what is expected there.
func decodeError(name string, loc locator, err error) error {
	var pe toml.ParseError
	if errors.As(err, &pe) {
		return &Error{File: name, Line: pe.Position.Line, Key: pe.LastKey, Err: errors.New(rewordParse(pe.Message))}
	}
	if m := badType.FindStringSubmatch(err.Error()); m != nil {
		line, _ := strconv.Atoi(m[1])
		msg := fmt.Sprintf("%s where %s is expected", tomlTypes[m[3]], goTypes[m[4]])
		if tomlTypes[m[3]] == "" || goTypes[m[4]] == "" {
			msg = fmt.Sprintf("a TOML %s where a %s is expected", m[3], m[4])
		}
		if v := loc.value(line); v != "" {
			msg = v + " is " + msg
		}
		return &Error{File: name, Line: line, Key: m[2], Err: errors.New(msg)}
	}
	return &Error{File: name, Err: err}
}

// rewordParse rewords an error of a value's parser: for addresses, the
// value, what is wrong with it, and the form expected.
func rewordParse(msg string) string {
	m := netipError.FindStringSubmatch(msg)
	if m == nil {
		return msg
	}
	kind, value, why := m[1], m[2], m[3]
	for inner := netipError.FindStringSubmatch(why); inner != nil; inner = netipError.FindStringSubmatch(why) {
		why = inner[3]
	}
	switch kind {
	case "Prefix":
		return fmt.Sprintf("%q is not an address prefix (%s): want ADDRESS/LENGTH, e.g. \"10.9.0.1/32\" or \"2001:db8::/64\"", value, why)
	case "AddrPort":
		return fmt.Sprintf("%q is not an address and port (%s): want ADDRESS:PORT, e.g. \"192.0.2.2:4500\" or \"[2001:db8::2]:4500\"", value, why)
	}
	return fmt.Sprintf("%q is not an IP address (%s): want e.g. \"192.0.2.1\" or \"2001:db8::1\"", value, why)
}

// sectionHint suggests the section meant by an unknown top-level key.
func sectionHint(key string) string {
	best, dist, array := "", 3, false
	t := reflect.TypeOf(Config{})
	for i := 0; i < t.NumField(); i++ {
		tag, _, _ := strings.Cut(t.Field(i).Tag.Get("toml"), ",")
		if tag == "" || tag == "-" {
			continue
		}
		if d := editDistance(strings.ToLower(key), tag); d < dist {
			best, dist, array = tag, d, t.Field(i).Type.Kind() == reflect.Slice
		}
	}
	switch {
	case best == "":
		return ""
	case array:
		return fmt.Sprintf(" (did you mean [[%s]]?)", best)
	}
	return fmt.Sprintf(" (did you mean [%s]?)", best)
}

// editDistance is the Levenshtein distance of a and b.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur := make([]int, len(b)+1)
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev = cur
	}
	return prev[len(b)]
}

// keyErr is a check's error about key; Parse adds the file and the line.
func keyErr(key string, format string, args ...any) error {
	return &Error{Key: key, Err: fmt.Errorf(format, args...)}
}

// locator finds the line of a key in the file's text.
type locator struct{ lines []string }

// find returns the line of a toml.Key such as ["sa", "foo"], searching in
// the tables named by its leading parts.
func (l locator) find(k toml.Key) int {
	if len(k) == 0 {
		return 0
	}
	if n := l.lineOf(strings.Join(k[:len(k)-1], "."), -1, k[len(k)-1]); n > 0 {
		return n
	}
	// A table of that name: its header.
	for i, raw := range l.lines {
		s := strings.TrimSpace(strings.SplitN(raw, "#", 2)[0])
		if strings.HasPrefix(s, "[") && strings.TrimSpace(strings.Trim(s, "[] \t")) == k.String() {
			return i + 1
		}
	}
	return 0
}

// findDotted locates a key written as "table.key" or "table[i].key".
func (l locator) findDotted(key string) int {
	dot := strings.LastIndex(key, ".")
	if dot < 0 {
		return 0
	}
	table, field := key[:dot], key[dot+1:]
	idx := -1
	if open := strings.Index(table, "["); open >= 0 {
		idx, _ = strconv.Atoi(strings.TrimSuffix(table[open+1:], "]"))
		table = table[:open]
	}
	return l.lineOf(table, idx, field)
}

// value returns the value written on a line (what follows "="), shortened,
// or "".
func (l locator) value(line int) string {
	if line < 1 || line > len(l.lines) {
		return ""
	}
	_, v, ok := strings.Cut(l.lines[line-1], "=")
	if v = strings.TrimSpace(v); !ok || v == "" {
		return ""
	}
	if len(v) > 60 {
		v = v[:57] + "..."
	}
	return v
}

// lineOf returns the 1-based line of field inside table (the idx-th array
// table of that name when idx ≥ 0), or of the table's header when the field
// is absent, or 0.
func (l locator) lineOf(table string, idx int, field string) int {
	cur, count, header := "", -1, 0
	for i, raw := range l.lines {
		s := strings.TrimSpace(raw)
		switch {
		case strings.HasPrefix(s, "[["):
			cur = strings.TrimSpace(strings.Trim(strings.SplitN(s, "#", 2)[0], "[] \t"))
			if cur == table {
				count++
			}
		case strings.HasPrefix(s, "["):
			cur = strings.TrimSpace(strings.Trim(strings.SplitN(s, "#", 2)[0], "[] \t"))
			if cur == table {
				count = 0
			}
		default:
			if cur != table || (idx >= 0 && count != idx) {
				continue
			}
			if name, _, ok := strings.Cut(s, "="); ok && strings.Trim(strings.TrimSpace(name), `"'`) == field {
				return i + 1
			}
			continue
		}
		if cur == table && (idx < 0 || count == idx) {
			header = i + 1
		}
	}
	return header
}
