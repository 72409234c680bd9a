package main

import (
	"fmt"
	"image"
	"image/color"
	"image/draw"
	"image/png"
	"math"
	"os"
	"strings"

	"golang.org/x/image/font"
	"golang.org/x/image/font/basicfont"
	"golang.org/x/image/math/fixed"
)

// writeChart draws one horizontal bar per row with a baseline (kubectl-tp ÷ baseline), grouped by
// RTT, with a line at 1.0: green where the row's goal is met, red where not, grey without a goal.
func writeChart(path string, secs []section) error {
	const (
		width, labelW, right = 900, 250, 60
		rowH, headH, top     = 18, 24, 40
	)
	maxR := 2.0
	n := 0
	for _, s := range secs {
		n++
		for _, r := range s.rows {
			if q, ok := r.ratio(); ok {
				maxR = max(maxR, q)
				n++
			}
		}
	}
	maxR = min(math.Ceil(maxR*2)/2, 4)
	height := top + n*rowH + len(secs)*(headH-rowH) + 30
	img := image.NewRGBA(image.Rect(0, 0, width, height))
	draw.Draw(img, img.Bounds(), image.White, image.Point{}, draw.Src)
	x0, x1 := labelW, width-right
	xOf := func(v float64) int { return x0 + int(float64(x1-x0)*min(v, maxR)/maxR) }
	ascii := strings.NewReplacer("≥", ">=", "≤", "<=", "×", "x", "÷", "/") // basicfont is ASCII only
	text := func(x, y int, c color.Color, s string) {
		d := &font.Drawer{Dst: img, Src: image.NewUniform(c), Face: basicfont.Face7x13, Dot: fixed.P(x, y)}
		d.DrawString(ascii.Replace(s))
	}
	fill := func(r image.Rectangle, c color.Color) {
		draw.Draw(img, r, image.NewUniform(c), image.Point{}, draw.Src)
	}
	grey := color.RGBA{0xdd, 0xdd, 0xdd, 0xff}
	text(10, 18, color.Black, "kubectl-tp / baseline (median ratio; throughput and conn/s: higher is better, times and memory: lower)")
	for v := 0.0; v <= maxR+1e-9; v += 0.5 {
		fill(image.Rect(xOf(v), top-6, xOf(v)+1, height-24), grey)
		text(xOf(v)-10, height-8, color.Gray{0x55}, fmt.Sprintf("%.1f", v))
	}
	y := top
	for _, s := range secs {
		text(10, y+14, color.Black, "added RTT "+rttName(s.rtt))
		y += headH
		for _, r := range s.rows {
			q, ok := r.ratio()
			if !ok {
				continue
			}
			c := color.RGBA{0x88, 0x88, 0x99, 0xff}
			switch r.verdict() {
			case "met":
				c = color.RGBA{0x3a, 0xa0, 0x4a, 0xff}
			case "**not met**":
				c = color.RGBA{0xd0, 0x40, 0x3a, 0xff}
			}
			text(20, y+12, color.Black, r.short)
			fill(image.Rect(x0, y+2, max(xOf(q), x0+1), y+rowH-3), c)
			label := fmt.Sprintf("%.2f", q)
			if q > maxR {
				label = "> " + label
			}
			if r.absGoal {
				t, _, _ := stats(r.tp)
				label += fmt.Sprintf("  (%.0f %s, goal %s)", t, r.unit, r.goal)
			} else if a, ok := r.addedText(); ok {
				label += "  (adds " + strings.Replace(a, "µs", "us", 1) + ")"
			}
			if q > maxR { // the bar fills the width: the label goes inside its end
				text(x1-4-7*len(ascii.Replace(label)), y+12, color.White, label)
			} else {
				text(xOf(q)+4, y+12, color.Black, label)
			}
			y += rowH
		}
	}
	fill(image.Rect(xOf(1), top-6, xOf(1)+2, height-24), color.Black)
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := png.Encode(f, img); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
