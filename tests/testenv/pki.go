package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Users of the token file. The admin is in system:masters; the tester has no group beyond
// system:authenticated, so what it may do is exactly what RBAC bindings in a test grant it.
const (
	adminUser  = "admin"
	testerUser = "jpki-tester"
)

type pkiFiles struct {
	dir                     string
	ca                      *x509.Certificate
	caCert, caKey           string
	servingCert, servingKey string
	saKey                   string
	tokenFile               string
	adminToken, testerToken string
	// The client certificate kube-apiserver presents to kubelets (logs, exec, port-forward).
	kubeletClientCert, kubeletClientKey string
}

// ensurePKI creates (or reuses, when present) a CA, a serving certificate for 127.0.0.1 and the in-cluster
// names, a service-account signing key and the static token file. ECDSA P-256 throughout; rustls (used by
// kube-rs) needs a CA with CA:TRUE and keyCertSign and a leaf with an IP SAN for 127.0.0.1.
func ensurePKI(dir string) (*pkiFiles, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	p := &pkiFiles{
		dir:         dir,
		caCert:      filepath.Join(dir, "ca.crt"),
		caKey:       filepath.Join(dir, "ca.key"),
		servingCert: filepath.Join(dir, "apiserver.crt"),
		servingKey:  filepath.Join(dir, "apiserver.key"),
		saKey:       filepath.Join(dir, "sa.key"),
		tokenFile:   filepath.Join(dir, "tokens.csv"),

		kubeletClientCert: filepath.Join(dir, "apiserver-kubelet-client.crt"),
		kubeletClientKey:  filepath.Join(dir, "apiserver-kubelet-client.key"),
	}
	if !exists(p.caCert) || !exists(p.caKey) || !exists(p.servingCert) || !exists(p.servingKey) || !exists(p.saKey) || !exists(p.tokenFile) {
		if err := p.generate(); err != nil {
			return nil, err
		}
	}
	data, err := os.ReadFile(p.caCert)
	if err != nil {
		return nil, err
	}
	block, _ := pem.Decode(data)
	if block == nil {
		return nil, fmt.Errorf("%s holds no PEM certificate", p.caCert)
	}
	if p.ca, err = x509.ParseCertificate(block.Bytes); err != nil {
		return nil, err
	}
	tokens, err := os.ReadFile(p.tokenFile)
	if err != nil {
		return nil, err
	}
	for _, line := range strings.Split(string(tokens), "\n") {
		fields := strings.Split(line, ",")
		if len(fields) < 2 {
			continue
		}
		switch fields[1] {
		case adminUser:
			p.adminToken = fields[0]
		case testerUser:
			p.testerToken = fields[0]
		}
	}
	if p.adminToken == "" || p.testerToken == "" {
		return nil, fmt.Errorf("%s lacks the %s or %s token", p.tokenFile, adminUser, testerUser)
	}
	// Made apart from the rest, so a state directory from before it existed gains it without a new CA.
	if !exists(p.kubeletClientCert) || !exists(p.kubeletClientKey) {
		if err := p.generateKubeletClient(); err != nil {
			return nil, fmt.Errorf("kube-apiserver's kubelet client certificate: %w", err)
		}
	}
	return p, nil
}

// generateKubeletClient signs the certificate kube-apiserver shows a kubelet (scripts/node runs one), in
// system:masters as kubeadm's apiserver-kubelet-client is, so `kubectl logs` and `exec` reach the node.
func (p *pkiFiles) generateKubeletClient() error {
	data, err := os.ReadFile(p.caKey)
	if err != nil {
		return err
	}
	block, _ := pem.Decode(data)
	if block == nil {
		return fmt.Errorf("%s holds no PEM key", p.caKey)
	}
	caKey, err := x509.ParseECPrivateKey(block.Bytes)
	if err != nil {
		return fmt.Errorf("%s: %w", p.caKey, err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		return err
	}
	now := time.Now().Add(-time.Hour)
	template := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: "kube-apiserver-kubelet-client", Organization: []string{"system:masters"}},
		NotBefore:    now,
		NotAfter:     now.Add(10 * 365 * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, template, p.ca, &key.PublicKey, caKey)
	if err != nil {
		return err
	}
	if err := os.WriteFile(p.kubeletClientKey, ecKeyPEM(key), 0o600); err != nil {
		return err
	}
	return os.WriteFile(p.kubeletClientCert, pemBlock("CERTIFICATE", der), 0o600)
}

func (p *pkiFiles) generate() error {
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	now := time.Now().Add(-time.Hour)
	caTemplate := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "kube-testenv-ca"},
		NotBefore:             now,
		NotAfter:              now.Add(10 * 365 * 24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTemplate, caTemplate, &caKey.PublicKey, caKey)
	if err != nil {
		return err
	}
	ca, _ := x509.ParseCertificate(caDER)

	servingKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	servingTemplate := &x509.Certificate{
		SerialNumber: big.NewInt(2),
		Subject:      pkix.Name{CommonName: "kube-apiserver"},
		NotBefore:    now,
		NotAfter:     now.Add(10 * 365 * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:     []string{"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local"},
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1"), net.ParseIP("::1"), net.ParseIP("10.0.0.1")},
	}
	servingDER, err := x509.CreateCertificate(rand.Reader, servingTemplate, ca, &servingKey.PublicKey, caKey)
	if err != nil {
		return err
	}
	saKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	tokens := fmt.Sprintf("%s,%s,%s,\"system:masters\"\n%s,%s,%s\n",
		randomToken(), adminUser, "uid-admin", randomToken(), testerUser, "uid-jpki-tester")

	for _, f := range []struct {
		path string
		data []byte
	}{
		{p.caCert, pemBlock("CERTIFICATE", caDER)},
		{p.caKey, ecKeyPEM(caKey)},
		{p.servingCert, pemBlock("CERTIFICATE", servingDER)},
		{p.servingKey, ecKeyPEM(servingKey)},
		{p.saKey, ecKeyPEM(saKey)},
		{p.tokenFile, []byte(tokens)},
	} {
		if err := os.WriteFile(f.path, f.data, 0o600); err != nil {
			return err
		}
	}
	return nil
}

func pemBlock(kind string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: kind, Bytes: der})
}

func ecKeyPEM(key *ecdsa.PrivateKey) []byte {
	der, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		panic(err) // P-256 keys always marshal
	}
	return pemBlock("EC PRIVATE KEY", der)
}

func randomToken() string {
	b := make([]byte, 24)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b)
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// writeKubeconfigs writes kubeconfig (contexts "admin", the default, and "tester"), tester.kubeconfig and
// kcm.kubeconfig; it returns the path of the first.
func writeKubeconfigs(dir string, p *pkiFiles, port int) (string, error) {
	caPEM, err := os.ReadFile(p.caCert)
	if err != nil {
		return "", err
	}
	server := fmt.Sprintf("https://127.0.0.1:%d", port)
	caData := base64.StdEncoding.EncodeToString(caPEM)
	render := func(current string, users map[string]string) string {
		var b strings.Builder
		fmt.Fprintf(&b, "apiVersion: v1\nkind: Config\nclusters:\n- name: kube-testenv\n  cluster:\n    server: %s\n    certificate-authority-data: %s\n", server, caData)
		b.WriteString("users:\n")
		for _, name := range []string{"admin", "tester"} {
			if tok, ok := users[name]; ok {
				fmt.Fprintf(&b, "- name: %s\n  user:\n    token: %s\n", name, tok)
			}
		}
		b.WriteString("contexts:\n")
		for _, name := range []string{"admin", "tester"} {
			if _, ok := users[name]; ok {
				fmt.Fprintf(&b, "- name: %s\n  context:\n    cluster: kube-testenv\n    user: %s\n    namespace: default\n", name, name)
			}
		}
		fmt.Fprintf(&b, "current-context: %s\n", current)
		return b.String()
	}
	files := map[string]string{
		"kubeconfig":        render("admin", map[string]string{"admin": p.adminToken, "tester": p.testerToken}),
		"tester.kubeconfig": render("tester", map[string]string{"tester": p.testerToken}),
		"kcm.kubeconfig":    render("admin", map[string]string{"admin": p.adminToken}),
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
			return "", err
		}
	}
	return filepath.Join(dir, "kubeconfig"), nil
}
