package proxy

import (
	"context"
	"fmt"
	"time"

	"github.com/weft-mesh/weft/internal/ca/agent"
	"github.com/weft-mesh/weft/internal/ca/secret"
)

// CAOptions make the proxy obtain its workload certificate itself, as Istio's agent does:
// it generates the key, sends a CSR to the CA service with its credential, and serves the
// result locally under the SDS names "default" and "ROOTCA". The key never leaves the
// proxy. The certificate is renewed at half its lifetime; a renewed certificate applies
// to new connections, and connections already up keep theirs.
type CAOptions struct {
	// Address of the CA service (the control plane's xDS port in local mode).
	Address string
	// TokenFile holds the workload's credential (written by `weft up`, 0600).
	TokenFile string
	// Identity is the SPIFFE ID the certificate must carry.
	Identity string
}

// runCA runs the certificate agent until ctx ends, loading every new certificate into
// the secret store. The proxy becomes ready only once the first one is in.
func (p *Proxy) runCA(ctx context.Context) error {
	o := p.opts.CA
	a, err := agent.New(agent.Options{
		Address: o.Address, Insecure: true, TokenFile: o.TokenFile, Identity: o.Identity, Log: p.log,
	})
	if err != nil {
		return fmt.Errorf("proxy: ca agent: %w", err)
	}
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case <-a.Changed():
			}
			b := a.Current()
			if b == nil {
				continue
			}
			secrets := secret.Workload(b.ChainPEM, b.KeyPEM, b.RootsPEM)
			if err := p.secrets.AddStatic(secrets); err != nil {
				p.log.Error("cannot load the workload certificate", "err", err)
				continue
			}
			p.state.mu.Lock()
			p.agentSecrets, p.agentUpdated = secrets, time.Now()
			p.state.mu.Unlock()
			p.log.Info("workload certificate loaded", "identity", o.Identity, "not_after", b.NotAfter.Format(time.RFC3339))
			p.markWarm("ca")
		}
	}()
	go func() {
		defer a.Close()
		if err := a.Run(ctx); err != nil && ctx.Err() == nil {
			p.log.Error("ca agent stopped", "err", err)
		}
	}()
	return nil
}
