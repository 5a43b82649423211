package main

import (
	"bytes"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"math"
	"strings"
)

// latencyChart draws the latency each path adds over no proxy (p50 and p99, at the main
// rate and connection count) as horizontal bars, with Go's image/png and a built-in
// 5x7 font: no plotting dependency.
func latencyChart(res *Results) ([]byte, error) {
	rows := mainRows(res)
	type bar struct {
		label    string
		p50, p99 float64
	}
	var bars []bar
	for _, r := range rows {
		if r.Proxy == "" || !r.OK {
			continue
		}
		bars = append(bars, bar{r.Name, r.AddedP50, r.AddedP99})
	}
	const (
		scale   = 2 // font pixels per glyph pixel
		left    = 200
		right   = 90
		top     = 60
		rowH    = 44
		barH    = 16
		width   = 1000
		bottomM = 50
	)
	height := top + rowH*max(len(bars), 1) + bottomM
	img := image.NewRGBA(image.Rect(0, 0, width, height))
	fill(img, img.Bounds(), color.RGBA{255, 255, 255, 255})
	ink := color.RGBA{30, 30, 30, 255}
	c50 := color.RGBA{52, 101, 164, 255}
	c99 := color.RGBA{237, 125, 49, 255}
	grid := color.RGBA{225, 225, 225, 255}

	title := "LATENCY ADDED OVER NO PROXY (MS), TWO SIDECARS"
	if len(rows) > 0 {
		title += fmt.Sprintf(", %s, %d CONNS", qpsLabel(rows[0].QPS), rows[0].Conns)
	}
	drawText(img, 10, 12, title, ink, scale)
	fill(img, image.Rect(10, 38, 24, 50), c50)
	drawText(img, 30, 38, "P50", ink, scale)
	fill(img, image.Rect(90, 38, 104, 50), c99)
	drawText(img, 110, 38, "P99", ink, scale)

	maxV := 0.0
	for _, b := range bars {
		maxV = math.Max(maxV, math.Max(b.p50, b.p99))
	}
	if maxV <= 0 {
		maxV = 1
	}
	step := niceStep(maxV / 5)
	maxV = math.Ceil(maxV/step) * step
	plotW := width - left - right
	x := func(v float64) int { return left + int(math.Max(v, 0)/maxV*float64(plotW)) }
	bottom := top + rowH*len(bars)
	for v := 0.0; v <= maxV+step/2; v += step {
		fill(img, image.Rect(x(v), top-4, x(v)+1, bottom), grid)
		drawText(img, x(v)-10, bottom+8, trimFloat(v), ink, scale)
	}
	for i, b := range bars {
		y := top + i*rowH
		drawText(img, 10, y+12, strings.ToUpper(b.label), ink, scale)
		fill(img, image.Rect(left, y+2, x(b.p50)+1, y+2+barH), c50)
		drawText(img, x(b.p50)+6, y+4, fmt.Sprintf("%.2f", b.p50), ink, scale)
		fill(img, image.Rect(left, y+2+barH+2, x(b.p99)+1, y+4+2*barH), c99)
		drawText(img, x(b.p99)+6, y+barH+6, fmt.Sprintf("%.2f", b.p99), ink, scale)
	}
	fill(img, image.Rect(left, top-4, left+1, bottom), ink)
	var buf bytes.Buffer
	if err := png.Encode(&buf, img); err != nil {
		return nil, fmt.Errorf("bench: chart: %w", err)
	}
	return buf.Bytes(), nil
}

func niceStep(raw float64) float64 {
	if raw <= 0 {
		return 1
	}
	p := math.Pow(10, math.Floor(math.Log10(raw)))
	for _, m := range []float64{1, 2, 2.5, 5, 10} {
		if m*p >= raw {
			return m * p
		}
	}
	return 10 * p
}

func trimFloat(v float64) string {
	s := fmt.Sprintf("%.2f", v)
	s = strings.TrimRight(strings.TrimRight(s, "0"), ".")
	return s
}

func fill(img *image.RGBA, r image.Rectangle, c color.RGBA) {
	r = r.Intersect(img.Bounds())
	for y := r.Min.Y; y < r.Max.Y; y++ {
		for x := r.Min.X; x < r.Max.X; x++ {
			img.SetRGBA(x, y, c)
		}
	}
}

// drawText writes s (upper case, digits, a little punctuation) with the 5x7 font.
func drawText(img *image.RGBA, x, y int, s string, c color.RGBA, scale int) {
	for _, r := range strings.ToUpper(s) {
		g, ok := font5x7[r]
		if !ok {
			g = font5x7['?']
		}
		for row, bits := range g {
			for col, b := range bits {
				if b == '#' {
					fill(img, image.Rect(x+col*scale, y+row*scale, x+(col+1)*scale, y+(row+1)*scale), c)
				}
			}
		}
		x += 6 * scale
	}
}

// font5x7 is a minimal bitmap font, drawn for this chart.
var font5x7 = map[rune][7]string{
	' ': {".....", ".....", ".....", ".....", ".....", ".....", "....."},
	'0': {".###.", "#...#", "#..##", "#.#.#", "##..#", "#...#", ".###."},
	'1': {"..#..", ".##..", "..#..", "..#..", "..#..", "..#..", ".###."},
	'2': {".###.", "#...#", "....#", "...#.", "..#..", ".#...", "#####"},
	'3': {"####.", "....#", "....#", ".###.", "....#", "....#", "####."},
	'4': {"...#.", "..##.", ".#.#.", "#..#.", "#####", "...#.", "...#."},
	'5': {"#####", "#....", "####.", "....#", "....#", "#...#", ".###."},
	'6': {".###.", "#....", "#....", "####.", "#...#", "#...#", ".###."},
	'7': {"#####", "....#", "...#.", "..#..", ".#...", ".#...", ".#..."},
	'8': {".###.", "#...#", "#...#", ".###.", "#...#", "#...#", ".###."},
	'9': {".###.", "#...#", "#...#", ".####", "....#", "....#", ".###."},
	'A': {".###.", "#...#", "#...#", "#####", "#...#", "#...#", "#...#"},
	'B': {"####.", "#...#", "#...#", "####.", "#...#", "#...#", "####."},
	'C': {".###.", "#...#", "#....", "#....", "#....", "#...#", ".###."},
	'D': {"####.", "#...#", "#...#", "#...#", "#...#", "#...#", "####."},
	'E': {"#####", "#....", "#....", "####.", "#....", "#....", "#####"},
	'F': {"#####", "#....", "#....", "####.", "#....", "#....", "#...."},
	'G': {".###.", "#...#", "#....", "#.###", "#...#", "#...#", ".####"},
	'H': {"#...#", "#...#", "#...#", "#####", "#...#", "#...#", "#...#"},
	'I': {".###.", "..#..", "..#..", "..#..", "..#..", "..#..", ".###."},
	'J': {"..###", "...#.", "...#.", "...#.", "...#.", "#..#.", ".##.."},
	'K': {"#...#", "#..#.", "#.#..", "##...", "#.#..", "#..#.", "#...#"},
	'L': {"#....", "#....", "#....", "#....", "#....", "#....", "#####"},
	'M': {"#...#", "##.##", "#.#.#", "#.#.#", "#...#", "#...#", "#...#"},
	'N': {"#...#", "#...#", "##..#", "#.#.#", "#..##", "#...#", "#...#"},
	'O': {".###.", "#...#", "#...#", "#...#", "#...#", "#...#", ".###."},
	'P': {"####.", "#...#", "#...#", "####.", "#....", "#....", "#...."},
	'Q': {".###.", "#...#", "#...#", "#...#", "#.#.#", "#..#.", ".##.#"},
	'R': {"####.", "#...#", "#...#", "####.", "#.#..", "#..#.", "#...#"},
	'S': {".####", "#....", "#....", ".###.", "....#", "....#", "####."},
	'T': {"#####", "..#..", "..#..", "..#..", "..#..", "..#..", "..#.."},
	'U': {"#...#", "#...#", "#...#", "#...#", "#...#", "#...#", ".###."},
	'V': {"#...#", "#...#", "#...#", "#...#", "#...#", ".#.#.", "..#.."},
	'W': {"#...#", "#...#", "#...#", "#.#.#", "#.#.#", "#.#.#", ".#.#."},
	'X': {"#...#", "#...#", ".#.#.", "..#..", ".#.#.", "#...#", "#...#"},
	'Y': {"#...#", "#...#", ".#.#.", "..#..", "..#..", "..#..", "..#.."},
	'Z': {"#####", "....#", "...#.", "..#..", ".#...", "#....", "#####"},
	'.': {".....", ".....", ".....", ".....", ".....", ".##..", ".##.."},
	',': {".....", ".....", ".....", ".....", ".##..", "..#..", ".#..."},
	'-': {".....", ".....", ".....", "#####", ".....", ".....", "....."},
	'+': {".....", "..#..", "..#..", "#####", "..#..", "..#..", "....."},
	'/': {"....#", "....#", "...#.", "..#..", ".#...", "#....", "#...."},
	'(': {"...#.", "..#..", ".#...", ".#...", ".#...", "..#..", "...#."},
	')': {".#...", "..#..", "...#.", "...#.", "...#.", "..#..", ".#..."},
	'%': {"##..#", "##..#", "...#.", "..#..", ".#...", "#..##", "#..##"},
	':': {".....", ".##..", ".##..", ".....", ".##..", ".##..", "....."},
	'=': {".....", ".....", "#####", ".....", "#####", ".....", "....."},
	'?': {".###.", "#...#", "....#", "...#.", "..#..", ".....", "..#.."},
}
