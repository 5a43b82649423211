package ca

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/envoyproxy/go-control-plane/pkg/cache/types"

	"github.com/weft-mesh/weft/internal/ca/secret"
	"github.com/weft-mesh/weft/internal/node"
)

// SDSSource is the control plane's SDS push model (gen.SecretSource): for each proxy it
// returns the "default" (certificate chain + key of the proxy's SPIFFE ID) and "ROOTCA"
// (trust bundle) secrets, which travel to the proxy over ADS.
//
// FALLBACK / FIRST STEP ONLY: here the control plane generates the workload's private key
// and sends it over the xDS stream, which contradicts "the private key never leaves the
// workload". The target model is the CSR path: the proxy's agent (package ca/agent)
// makes its key, gets it signed through Server, and fills the same two secret names
// locally; the control plane then stops sending them.
//
// Key and certificate are cached per identity (every proxy of a service account shares
// them, as pods of one account share an identity) until GraceRatio of the lifetime has
// passed; then the next Secrets call issues new ones. Run triggers that push in time.
type SDSSource struct {
	ca  *CA
	ttl time.Duration
	// ratio of the lifetime after which a secret is renewed.
	ratio float64
	log   *slog.Logger

	mu   sync.Mutex
	byID map[sdsKey]*sdsEntry
	wake chan struct{} // a new entry may be due before the timer Run waits on
}

// sdsKey is an identity; a struct key spares building the SPIFFE ID string on every
// cached call.
type sdsKey struct{ ns, sa string }

type sdsEntry struct {
	kp      *KeyPair
	renewAt time.Time
	secrets []types.Resource
}

var _ interface {
	Secrets(p *node.Proxy) ([]types.Resource, error)
} = (*SDSSource)(nil)

// SDSOptions configure an SDSSource.
type SDSOptions struct {
	// TTL of the certificates; 0 is the CA's default.
	TTL time.Duration
	// GraceRatio of the lifetime after which a certificate is renewed (default 0.5, as
	// Istio's SECRET_GRACE_PERIOD_RATIO). No jitter: identities issued together renew
	// together, so one push carries all their new secrets.
	GraceRatio float64
	Log        *slog.Logger
}

// NewSDSSource serves c's certificates as pushed SDS secrets.
func NewSDSSource(c *CA, opts SDSOptions) (*SDSSource, error) {
	if opts.GraceRatio == 0 {
		opts.GraceRatio = 0.5
	}
	if opts.GraceRatio <= 0 || opts.GraceRatio >= 1 {
		return nil, fmt.Errorf("ca: sds: grace ratio %v: must be in (0, 1)", opts.GraceRatio)
	}
	if _, err := c.TTL(opts.TTL); err != nil {
		return nil, fmt.Errorf("ca: sds: %w", err)
	}
	if opts.Log == nil {
		opts.Log = c.log
	}
	return &SDSSource{
		ca: c, ttl: opts.TTL, ratio: opts.GraceRatio,
		log:  opts.Log.With("component", "ca-sds"),
		byID: map[sdsKey]*sdsEntry{},
		wake: make(chan struct{}, 1),
	}, nil
}

// Secrets implements gen.SecretSource: ROOTCA then default, the same resources on every
// call until the identity's renewal is due.
func (s *SDSSource) Secrets(p *node.Proxy) ([]types.Resource, error) {
	key := sdsKey{p.Namespace, p.ServiceAccount}
	now := s.ca.now()
	s.mu.Lock()
	e := s.byID[key]
	s.mu.Unlock()
	if e != nil && now.Before(e.renewAt) {
		return append([]types.Resource(nil), e.secrets...), nil
	}
	// Issue outside the lock: an RSA key takes tens of milliseconds and other proxies'
	// generations must not queue behind it.
	id := p.SpiffeID(s.ca.TrustDomain())
	kp, err := s.ca.Issue(id, s.ttl)
	if err != nil {
		return nil, fmt.Errorf("ca: sds: proxy %s: %w", p.ID, err)
	}
	fresh := &sdsEntry{kp: kp, renewAt: renewAt(kp.IssuedAt, kp.NotAfter, s.ratio)}
	for _, sec := range secret.Workload(kp.ChainPEM, kp.KeyPEM, s.ca.Roots()) {
		fresh.secrets = append(fresh.secrets, sec)
	}
	s.mu.Lock()
	// A concurrent generation for the same identity may have stored one first; keep it
	// so every proxy of the identity gets the same bytes.
	if cur := s.byID[key]; cur != nil && now.Before(cur.renewAt) && cur != e {
		fresh = cur
	} else {
		s.byID[key] = fresh
		s.log.Info("issued workload certificate (control-plane key)", "identity", id,
			"serial", kp.Certificate.Leaf.SerialNumber.Text(16), "not_after", kp.NotAfter, "renew_at", fresh.renewAt)
	}
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
	return append([]types.Resource(nil), fresh.secrets...), nil
}

// renewAt is issuedAt plus ratio of the remaining lifetime as the issuer saw it. It is
// measured from the local issue time, not NotBefore, which is back-dated for clock skew.
func renewAt(issuedAt, notAfter time.Time, ratio float64) time.Time {
	return issuedAt.Add(time.Duration(float64(notAfter.Sub(issuedAt)) * ratio))
}

// NextRenewal is when the earliest cached identity is due for a new certificate, zero
// when none is cached. The control plane pushes at that time (Run does it).
func (s *SDSSource) NextRenewal() time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	var next time.Time
	for _, e := range s.byID {
		if next.IsZero() || e.renewAt.Before(next) {
			next = e.renewAt
		}
	}
	return next
}

// Run calls push whenever a cached identity's renewal falls due, until ctx ends. Due
// entries are dropped from the cache first, so the generation the push causes issues
// new certificates, and an identity with no connected proxy stops being renewed.
// push is the control plane's push-all (xds.Server.Push).
func (s *SDSSource) Run(ctx context.Context, push func(reason string)) {
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		next := s.NextRenewal()
		wait := time.Hour // re-check now and then even with nothing cached
		if !next.IsZero() {
			wait = next.Sub(s.ca.now())
		}
		timer.Reset(max(wait, 0))
		select {
		case <-ctx.Done():
			return
		case <-s.wake:
			continue // Reset above re-arms the timer (Go 1.23+ timers drop stale fires)
		case <-timer.C:
		}
		if n := s.dropDue(); n > 0 {
			s.log.Info("workload certificates due for renewal", "identities", n)
			push("certificate renewal")
		}
	}
}

func (s *SDSSource) dropDue() int {
	now := s.ca.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for key, e := range s.byID {
		if !now.Before(e.renewAt) {
			delete(s.byID, key)
			n++
		}
	}
	return n
}
