// Command arch draws docs/packages.svg, the picture of smtpgate's packages
// and their imports, from the code itself, and checks the house rules the
// picture shows: every import points down (to a lower floor), and no
// package holds more than a quarter of the code. Its test (go test
// ./docs/arch) fails when the committed picture no longer matches the
// code or a rule is broken; `go run ./docs/arch` (from the repository
// root) draws it anew.
package main

import (
	"flag"
	"fmt"
	"go/parser"
	"go/token"
	"html"
	"io/fs"
	"log"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
)

const module = "github.com/smtpgate/smtpgate"

// floors is the house: each package's floor. An import must point to a
// lower floor; packages on one floor do not import each other (so no
// check imports another). A package missing here is an error: a new
// package takes a floor on purpose.
var floors = map[string]int{
	"reply":           0,
	"address":         0,
	"dns":             0,
	"dns/dnstest":     0,
	"users":           0,
	"store":           0,
	"store/redistest": 0,
	"table":           1,
	"config":          1,
	"upstream":        2,
	"policy":          3,
	"check/*":         4, // one folder per check
	"check":           5, // the chain
	"session":         5,
	"proxy":           6,
	"cmd/smtpgate":    7,
}

// floorNames label the floors in the picture.
var floorNames = []string{"leaf libraries", "tables, configuration", "the MTA client", "the policy engine", "the checks", "the chain, one conversation", "the server", "the command"}

// Package is one package of the module: its directory (relative to the
// module root), its floor, its non-test lines and the module packages it
// imports.
type Package struct {
	Dir     string
	Floor   int
	Lines   int
	Imports []string
}

// floorOf returns the floor of dir, and whether the house has one for it.
func floorOf(dir string) (int, bool) {
	if f, ok := floors[dir]; ok {
		return f, true
	}
	if strings.HasPrefix(dir, "check/") && !strings.Contains(dir[len("check/"):], "/") {
		return floors["check/*"], true
	}
	return 0, false
}

// skip are the directories that are not part of the product: tests end to
// end, vendored code, documentation tools.
func skip(dir string) bool {
	for _, p := range []string{".git", "third_party", "integration", "docs", "bin", "examples"} {
		if dir == p || strings.HasPrefix(dir, p+"/") {
			return true
		}
	}
	return strings.Contains(dir, "testdata") || strings.HasSuffix(dir, "checktest")
}

// Load reads the packages under root.
func Load(root string) ([]Package, error) {
	byDir := map[string]*Package{}
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, path)
		rel = filepath.ToSlash(rel)
		if d.IsDir() {
			if rel != "." && skip(rel) {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		dir := filepath.ToSlash(filepath.Dir(rel))
		src, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		f, err := parser.ParseFile(token.NewFileSet(), path, src, parser.ImportsOnly)
		if err != nil {
			return err
		}
		p := byDir[dir]
		if p == nil {
			p = &Package{Dir: dir}
			byDir[dir] = p
		}
		p.Lines += strings.Count(string(src), "\n")
		for _, imp := range f.Imports {
			ip, _ := strconv.Unquote(imp.Path.Value)
			if rest, ok := strings.CutPrefix(ip, module+"/"); ok && !contains(p.Imports, rest) {
				p.Imports = append(p.Imports, rest)
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	var pkgs []Package
	for _, p := range byDir {
		sort.Strings(p.Imports)
		f, ok := floorOf(p.Dir)
		if !ok {
			f = -1
		}
		p.Floor = f
		pkgs = append(pkgs, *p)
	}
	sort.Slice(pkgs, func(i, j int) bool {
		if pkgs[i].Floor != pkgs[j].Floor {
			return pkgs[i].Floor < pkgs[j].Floor
		}
		return pkgs[i].Dir < pkgs[j].Dir
	})
	return pkgs, nil
}

func contains(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

// Check returns every broken house rule.
func Check(pkgs []Package) []string {
	var problems []string
	floor := map[string]int{}
	total := 0
	for _, p := range pkgs {
		floor[p.Dir] = p.Floor
		total += p.Lines
	}
	for _, p := range pkgs {
		if p.Floor < 0 {
			problems = append(problems, fmt.Sprintf("%s has no floor in the house (docs/arch/main.go)", p.Dir))
			continue
		}
		for _, imp := range p.Imports {
			if f, ok := floor[imp]; ok && f >= p.Floor {
				problems = append(problems, fmt.Sprintf("%s (floor %d) imports %s (floor %d): imports point down", p.Dir, p.Floor, imp, f))
			}
		}
		if p.Lines*4 > total {
			problems = append(problems, fmt.Sprintf("%s holds %d of %d lines, over a quarter", p.Dir, p.Lines, total))
		}
	}
	return problems
}

// SVG draws the packages, floor by floor (the command on top, the leaf
// libraries at the bottom), with an arrow for every import. It draws no
// sizes, so it changes only when a package or an import does.
func SVG(pkgs []Package) string {
	const (
		boxW, boxH = 118, 40
		gapX       = 12
		floorH     = 92
		left       = 150
	)
	nFloors := len(floorNames)
	perFloor := map[int][]Package{}
	maxN := 0
	for _, p := range pkgs {
		perFloor[p.Floor] = append(perFloor[p.Floor], p)
		maxN = max(maxN, len(perFloor[p.Floor]))
	}
	width := left + maxN*(boxW+gapX) + 20
	height := nFloors*floorH + 50
	type pos struct{ x, y int }
	at := map[string]pos{}
	for f := 0; f < nFloors; f++ {
		row := perFloor[f]
		rowW := len(row)*(boxW+gapX) - gapX
		x0 := left + (width-left-20-rowW)/2
		y := 30 + (nFloors-1-f)*floorH
		for i, p := range row {
			at[p.Dir] = pos{x0 + i*(boxW+gapX), y}
		}
	}
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="12">`+"\n", width, height, width, height)
	b.WriteString(`<defs><marker id="a" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="#555"/></marker></defs>` + "\n")
	fmt.Fprintf(&b, `<rect width="%d" height="%d" fill="#fff"/>`+"\n", width, height)
	fmt.Fprintf(&b, `<text x="10" y="18" font-size="13" font-weight="bold">smtpgate packages: imports point down (generated by go run ./docs/arch)</text>`+"\n")
	for f := 0; f < nFloors; f++ {
		y := 30 + (nFloors-1-f)*floorH
		fmt.Fprintf(&b, `<text x="10" y="%d" fill="#666">%d: %s</text>`+"\n", y+boxH/2+4, f, html.EscapeString(floorNames[f]))
		fmt.Fprintf(&b, `<line x1="10" y1="%d" x2="%d" y2="%d" stroke="#eee"/>`+"\n", y+boxH+20, width-10, y+boxH+20)
	}
	for _, p := range pkgs {
		from := at[p.Dir]
		for _, imp := range p.Imports {
			to, ok := at[imp]
			if !ok {
				continue
			}
			fmt.Fprintf(&b, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="#999" stroke-width="1" marker-end="url(#a)"/>`+"\n", from.x+boxW/2, from.y+boxH, to.x+boxW/2, to.y)
		}
	}
	for _, p := range pkgs {
		q := at[p.Dir]
		fill := "#e8f0fe"
		if p.Floor == floors["check/*"] {
			fill = "#e6f4ea"
		}
		if p.Floor == 0 {
			fill = "#fef7e0"
		}
		fmt.Fprintf(&b, `<rect x="%d" y="%d" width="%d" height="%d" rx="5" fill="%s" stroke="#333"/>`+"\n", q.x, q.y, boxW, boxH, fill)
		label := p.Dir
		if p.Floor == floors["check/*"] {
			label = strings.TrimPrefix(label, "check/")
		}
		fmt.Fprintf(&b, `<text x="%d" y="%d" text-anchor="middle">%s</text>`+"\n", q.x+boxW/2, q.y+boxH/2+4, html.EscapeString(label))
	}
	b.WriteString("</svg>\n")
	return b.String()
}

func main() {
	root := flag.String("root", ".", "the repository root")
	out := flag.String("o", "docs/packages.svg", "where to write the picture")
	flag.Parse()
	pkgs, err := Load(*root)
	if err != nil {
		log.Fatal(err)
	}
	for _, p := range Check(pkgs) {
		log.Print(p)
	}
	if err := os.WriteFile(*out, []byte(SVG(pkgs)), 0o644); err != nil {
		log.Fatal(err)
	}
	for _, p := range pkgs {
		fmt.Printf("%d %-24s %5d lines  imports %s\n", p.Floor, p.Dir, p.Lines, strings.Join(p.Imports, " "))
	}
}
