//go:build e2e

package bookinfo

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// chromiumPath is where Debian's chromium package installs the browser
// (CI: apt-get install -y chromium).
const chromiumPath = "/usr/bin/chromium"

// chromium runs headless Chromium on url with extra flags and returns its
// stdout. The flags keep it off the network except for url itself.
func chromium(t *testing.T, url string, extra ...string) string {
	t.Helper()
	if _, err := os.Stat(chromiumPath); err != nil {
		t.Skipf("headless browser test needs %s (apt-get install -y chromium): %v", chromiumPath, err)
	}
	args := []string{
		"--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
		"--disable-background-networking", "--disable-component-update", "--disable-sync",
		"--no-proxy-server", // loopback only, whatever the environment says
		"--user-data-dir=" + t.TempDir(),
	}
	args = append(args, extra...)
	args = append(args, url)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, chromiumPath, args...)
	cmd.WaitDelay = 5 * time.Second
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("chromium %s: %v\nstderr:\n%s", url, err, stderr.String())
	}
	return stdout.String()
}

func TestProductPageInBrowser(t *testing.T) {
	for _, tc := range []struct {
		version     string
		color       string // "" = no stars
		full, empty int
		screenshot  bool
	}{
		{version: "v1"},
		{version: "v2", color: "black", full: 9, empty: 1},
		{version: "v3", color: "red", full: 9, empty: 1, screenshot: true},
	} {
		t.Run(tc.version, func(t *testing.T) {
			m := startMesh(t, meshOptions{reviewsVersion: tc.version})
			url := m.url[ProductPage] + "/productpage"
			dom := chromium(t, url, "--dump-dom")
			for _, want := range []string{"The Comedy of Errors", "Reviewer1", "Reviewer2", review1Text, "PublisherA", "BookInfo Sample"} {
				if !strings.Contains(dom, want) {
					t.Errorf("rendered DOM lacks %q", want)
				}
			}
			for _, color := range []string{"black", "red"} {
				full, empty := pageStars(dom, color)
				wantFull, wantEmpty := 0, 0
				if color == tc.color {
					wantFull, wantEmpty = tc.full, tc.empty
				}
				if full != wantFull || empty != wantEmpty {
					t.Errorf("%s stars in DOM: full=%d empty=%d, want %d and %d", color, full, empty, wantFull, wantEmpty)
				}
			}
			if tc.color != "" && strings.Count(dom, "\u2605") != tc.full {
				t.Errorf("DOM has %d ★ glyphs, want %d", strings.Count(dom, "\u2605"), tc.full)
			}
			if !tc.screenshot {
				return
			}
			png := filepath.Join(t.TempDir(), "productpage.png")
			chromium(t, url, "--screenshot="+png, "--window-size=1280,1000", "--hide-scrollbars")
			b, err := os.ReadFile(png)
			if err != nil {
				t.Fatalf("screenshot: %v", err)
			}
			if !bytes.HasPrefix(b, []byte("\x89PNG\r\n\x1a\n")) || len(b) < 10_000 {
				t.Errorf("screenshot is not a plausible PNG (%d bytes)", len(b))
			}
			// BOOKINFO_SCREENSHOT=path keeps a copy for a person to look at.
			if keep := os.Getenv("BOOKINFO_SCREENSHOT"); keep != "" {
				if err := os.WriteFile(keep, b, 0o644); err != nil {
					t.Errorf("keeping screenshot: %v", err)
				}
			}
		})
	}
}
