package config

import (
	"bufio"
	"encoding"
	"os"
	"reflect"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
)

// kind is what a TOML key of the configuration is.
type kind int

const (
	kindValue      kind = iota // key = value
	kindTable                  // [section]
	kindArrayTable             // [[section]]
	kindMapTable               // [section] whose keys are free (a Go map)
)

// configKeys walks the toml tags of Config, nested sections and arrays of
// tables included, and returns every key by its dotted name ("interface",
// "interface.mode", "policy.exception.class").
func configKeys() map[string]kind {
	keys := map[string]kind{}
	walkKeys(reflect.TypeFor[Config](), "", keys)
	return keys
}

var textUnmarshaler = reflect.TypeFor[encoding.TextUnmarshaler]()

func walkKeys(t reflect.Type, prefix string, keys map[string]kind) {
	for i := range t.NumField() {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("toml"), ",")
		if name == "-" || !f.IsExported() {
			continue
		}
		if name == "" {
			name = f.Name
		}
		key := prefix + name
		ft := f.Type
		for ft.Kind() == reflect.Pointer {
			ft = ft.Elem()
		}
		switch {
		case reflect.PointerTo(ft).Implements(textUnmarshaler):
			keys[key] = kindValue
		case ft.Kind() == reflect.Struct:
			keys[key] = kindTable
			walkKeys(ft, key+".", keys)
		case ft.Kind() == reflect.Slice && ft.Elem().Kind() == reflect.Struct &&
			!reflect.PointerTo(ft.Elem()).Implements(textUnmarshaler):
			keys[key] = kindArrayTable
			walkKeys(ft.Elem(), key+".", keys)
		case ft.Kind() == reflect.Map:
			keys[key] = kindMapTable
		default:
			keys[key] = kindValue
		}
	}
}

// mention is a key a document names, and where.
type mention struct {
	key  string
	line int
}

var (
	// A TOML table header, possibly commented out: "[interface]",
	// "# [[sa]]".
	tomlHeader = regexp.MustCompile(`^#?\s*(\[\[?)([A-Za-z0-9_.-]+)(\]\]?)\s*(#.*)?$`)
	// A key line, possibly commented out: "mtu = 1400", "# outside = ...".
	tomlKey = regexp.MustCompile(`^#?\s?([A-Za-z0-9_-]+)\s*=\s*\S`)
	// A section heading of CONFIG.md: "## [interface]", "### [[peer]]".
	mdHeader = regexp.MustCompile(`^#{2,4}\s+(\[\[?)([A-Za-z0-9_.-]+)(\]\]?)\s*$`)
	// Any other heading ends a section.
	mdOtherHeader = regexp.MustCompile(`^#{1,6}\s`)
	// A key row of a CONFIG.md table: "| `mtu` | integer | ...".
	mdKey = regexp.MustCompile("^\\|\\s*`([A-Za-z0-9_-]+)`\\s*\\|")
)

// exampleMentions returns the sections and keys config.example.toml sets or
// shows commented out ("# key = value").
func exampleMentions(t *testing.T, path string) []mention {
	return scanMentions(t, path, func(line string) (string, bool, bool) {
		if m := tomlHeader.FindStringSubmatch(line); m != nil {
			return m[2], true, true
		}
		if m := tomlKey.FindStringSubmatch(line); m != nil {
			return m[1], false, true
		}
		return "", false, false
	})
}

// referenceMentions returns the sections (headings) and keys (first cells of
// table rows) of docs/CONFIG.md.
func referenceMentions(t *testing.T, path string) []mention {
	return scanMentions(t, path, func(line string) (string, bool, bool) {
		if m := mdHeader.FindStringSubmatch(line); m != nil {
			return m[2], true, true
		}
		if mdOtherHeader.MatchString(line) {
			return "", true, false
		}
		if m := mdKey.FindStringSubmatch(line); m != nil {
			return m[1], false, true
		}
		return "", false, false
	})
}

// scanMentions reads path line by line; match says whether a line names a
// section (which becomes the current one; "" ends it without a mention) or
// a key of the current section.
func scanMentions(t *testing.T, path string, match func(line string) (name string, header, ok bool)) []mention {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []mention
	section := ""
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		name, header, ok := match(sc.Text())
		switch {
		case header:
			section = name
			if ok {
				out = append(out, mention{name, n})
			}
		case ok && section == "":
			out = append(out, mention{name, n})
		case ok:
			out = append(out, mention{section + "." + name, n})
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// checkMentions reports keys of the configuration the document does not
// mention, and keys it mentions that the configuration does not have. Keys
// inside a map table (autovpn.fallback.unknown) are its values' names and
// are checked by the configuration itself.
// Keys in lacks may be missing; one the document names is reported, so that
// it is taken out of lacks.
func checkMentions(keys map[string]kind, doc string, mentions []mention, lacks map[string]bool) []string {
	var problems []string
	seen := map[string]bool{}
	for _, m := range mentions {
		seen[m.key] = true
		if lacks[m.key] {
			problems = append(problems, doc+":"+strconv.Itoa(m.line)+": "+m.key+": now documented: take it out of the list of keys the document lacks")
		}
		if _, ok := keys[m.key]; ok {
			continue
		}
		if dot := strings.LastIndex(m.key, "."); dot > 0 && keys[m.key[:dot]] == kindMapTable {
			continue
		}
		problems = append(problems, doc+":"+strconv.Itoa(m.line)+": "+m.key+": no such key in the configuration")
	}
	for k := range keys {
		if !seen[k] && !lacks[k] {
			problems = append(problems, doc+": "+k+": missing (a key of the configuration structs)")
		}
	}
	sort.Strings(problems)
	return problems
}

// exampleLacks are keys config.example.toml may leave out (none now). The
// test fails once the example shows one of them: then delete it here.
var exampleLacks = map[string]bool{}

// TestConfigReference: docs/CONFIG.md and config.example.toml name every key
// of the configuration (commented-out keys count in the example) and no key
// that does not exist, so neither goes stale when a key is added, renamed or
// removed.
func TestConfigReference(t *testing.T) {
	keys := configKeys()
	for _, must := range []string{"interface.mode", "peer.remote_certificate", "policy.private-or-clear",
		"policy.exception.class", "autovpn.fallback", "forward.connect", "proxy.socks5"} {
		if _, ok := keys[must]; !ok {
			t.Fatalf("the walk of the config structs missed %s: %v", must, keys)
		}
	}
	for _, doc := range []struct {
		path     string
		mentions func(*testing.T, string) []mention
		lacks    map[string]bool
	}{
		{"../../../config.example.toml", exampleMentions, exampleLacks},
		{"../../../docs/CONFIG.md", referenceMentions, nil},
	} {
		for _, p := range checkMentions(keys, strings.TrimPrefix(doc.path, "../../../"), doc.mentions(t, doc.path), doc.lacks) {
			t.Error(p)
		}
	}
}

// TestConfigReferenceFails: the check finds a key missing from a document,
// and a key a document names that does not exist.
func TestConfigReferenceFails(t *testing.T) {
	keys := map[string]kind{"interface": kindTable, "interface.mode": kindValue, "interface.mtu": kindValue,
		"autovpn": kindTable, "autovpn.fallback": kindMapTable}
	dir := t.TempDir()
	write := func(name, text string) string {
		p := dir + "/" + name
		if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	toml := write("ex.toml", "[interface]\nmode = \"tun\"\n# mtuu = 1400\n[autovpn]\n[autovpn.fallback]\nunknown = \"clear\"\n")
	got := checkMentions(keys, "ex.toml", exampleMentions(t, toml), nil)
	want := []string{"ex.toml: interface.mtu: missing (a key of the configuration structs)",
		"ex.toml:3: interface.mtuu: no such key in the configuration"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("example: got %q, want %q", got, want)
	}
	md := write("ref.md", "# Config\n\n## [interface]\n\n| key | type |\n| --- | --- |\n| `mode` | string |\n\n"+
		"## Notes\n\n| `mtu` | not in a section |\n\n## [autovpn]\n\n### [autovpn.fallback]\n\n| `unknown` | string |\n")
	got = checkMentions(keys, "ref.md", referenceMentions(t, md), nil)
	want = []string{"ref.md: interface.mtu: missing (a key of the configuration structs)",
		"ref.md:11: mtu: no such key in the configuration"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("reference: got %q, want %q", got, want)
	}
}
