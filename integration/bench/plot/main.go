// Command plot draws the soak harness's samples (CSV: seconds, then one
// column per series, with a header row) as an SVG line chart, one panel
// per series, so that a growing RSS or a goroutine leak shows at a
// glance. Standard library only.
//
//	plot -in soak.csv -out soak.svg -title "smtpgate soak"
package main

import (
	"encoding/csv"
	"flag"
	"fmt"
	"log"
	"os"
	"strconv"
	"strings"
)

func main() {
	in := flag.String("in", "", "CSV file: seconds,series1,series2,...")
	out := flag.String("out", "", "SVG file to write")
	title := flag.String("title", "", "chart title")
	flag.Parse()
	f, err := os.Open(*in)
	if err != nil {
		log.Fatal(err)
	}
	rows, err := csv.NewReader(f).ReadAll()
	if err != nil {
		log.Fatal(err)
	}
	if len(rows) < 2 {
		log.Fatal("plot: no samples")
	}
	head, rows := rows[0], rows[1:]
	cols := make([][]float64, len(head))
	for _, r := range rows {
		for i := range head {
			v, _ := strconv.ParseFloat(r[i], 64)
			cols[i] = append(cols[i], v)
		}
	}
	if err := os.WriteFile(*out, []byte(svg(*title, head, cols)), 0o644); err != nil {
		log.Fatal(err)
	}
}

const (
	width   = 800
	panelH  = 180
	marginL = 70
	marginR = 20
	marginT = 40
	gap     = 50
)

var colors = []string{"#1f77b4", "#d62728", "#2ca02c", "#9467bd"}

func svg(title string, head []string, cols [][]float64) string {
	n := len(head) - 1
	height := marginT + n*(panelH+gap)
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="sans-serif" font-size="12">`+"\n", width, height)
	fmt.Fprintf(&b, `<rect width="100%%" height="100%%" fill="white"/><text x="%d" y="22" font-size="15">%s</text>`+"\n", marginL, esc(title))
	xs := cols[0]
	xmax := xs[len(xs)-1]
	if xmax <= 0 {
		xmax = 1
	}
	for s := 1; s <= n; s++ {
		top := marginT + (s-1)*(panelH+gap)
		ys := cols[s]
		ymax := 0.0
		for _, y := range ys {
			ymax = max(ymax, y)
		}
		ymax = niceCeil(ymax)
		x := func(v float64) float64 { return marginL + v/xmax*(width-marginL-marginR) }
		y := func(v float64) float64 { return float64(top+panelH) - v/ymax*panelH }
		fmt.Fprintf(&b, `<text x="%d" y="%d" font-weight="bold">%s</text>`+"\n", marginL, top-6, esc(head[s]))
		for i := 0; i <= 4; i++ {
			v := ymax * float64(i) / 4
			fmt.Fprintf(&b, `<line x1="%d" x2="%d" y1="%.1f" y2="%.1f" stroke="#ddd"/><text x="%d" y="%.1f" text-anchor="end">%s</text>`+"\n",
				marginL, width-marginR, y(v), y(v), marginL-6, y(v)+4, strconv.FormatFloat(v, 'f', -1, 64))
		}
		for i := 0; i <= 5; i++ {
			v := xmax * float64(i) / 5
			fmt.Fprintf(&b, `<text x="%.1f" y="%d" text-anchor="middle">%.0fs</text>`+"\n", x(v), top+panelH+16, v)
		}
		var pts strings.Builder
		for i := range ys {
			fmt.Fprintf(&pts, "%.1f,%.1f ", x(xs[i]), y(ys[i]))
		}
		fmt.Fprintf(&b, `<polyline fill="none" stroke="%s" stroke-width="1.5" points="%s"/>`+"\n", colors[(s-1)%len(colors)], pts.String())
	}
	b.WriteString("</svg>\n")
	return b.String()
}

// niceCeil rounds up to 1, 2 or 5 times a power of ten.
func niceCeil(v float64) float64 {
	if v <= 0 {
		return 1
	}
	p := 1.0
	for p*10 <= v {
		p *= 10
	}
	for p > v {
		p /= 10
	}
	for _, m := range []float64{1, 2, 5, 10} {
		if m*p >= v {
			return m * p
		}
	}
	return 10 * p
}

func esc(s string) string {
	return strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;").Replace(s)
}
