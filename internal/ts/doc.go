// Package ts holds traffic selectors (RFC 7296 §3.13.1), the one type that
// IKE negotiates, the policy configures and the datapath matches packets
// against. It lives below every package that uses it; ike and policy name
// it as ike.Selector and policy.Selector.
package ts
