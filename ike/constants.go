package ike

import "strconv"

// Specification constants (RFC 7296 and the RFCs it is extended by). Values
// oevpn chose for private-use code points (AutoVPN) live beside them, marked.

// ExchangeType is the IKE header's exchange type (RFC 7296 §3.1).
type ExchangeType uint8

// Exchange types.
const (
	IKE_SA_INIT     ExchangeType = 34
	IKE_AUTH        ExchangeType = 35
	CREATE_CHILD_SA ExchangeType = 36
	INFORMATIONAL   ExchangeType = 37
)

func (e ExchangeType) String() string {
	switch e {
	case IKE_SA_INIT:
		return "IKE_SA_INIT"
	case IKE_AUTH:
		return "IKE_AUTH"
	case CREATE_CHILD_SA:
		return "CREATE_CHILD_SA"
	case INFORMATIONAL:
		return "INFORMATIONAL"
	}
	return "exchange(" + strconv.Itoa(int(e)) + ")"
}

// Header flags (RFC 7296 §3.1).
const (
	FlagInitiator = 0x08
	FlagVersion   = 0x10
	FlagResponse  = 0x20
)

// Version is the IKE version octet: major 2, minor 0.
const Version = 0x20

// PayloadType is a payload's type (RFC 7296 §3.2).
type PayloadType uint8

// Payload types.
const (
	PayloadNone    PayloadType = 0
	PayloadSA      PayloadType = 33
	PayloadKE      PayloadType = 34
	PayloadIDi     PayloadType = 35
	PayloadIDr     PayloadType = 36
	PayloadCERT    PayloadType = 37
	PayloadCERTREQ PayloadType = 38
	PayloadAUTH    PayloadType = 39
	PayloadNonce   PayloadType = 40
	PayloadNotify  PayloadType = 41
	PayloadDelete  PayloadType = 42
	PayloadVendor  PayloadType = 43
	PayloadTSi     PayloadType = 44
	PayloadTSr     PayloadType = 45
	PayloadSK      PayloadType = 46
	PayloadCP      PayloadType = 47
	PayloadEAP     PayloadType = 48
	PayloadSKF     PayloadType = 53 // RFC 7383

	// AutoVPN private-use payloads (DESIGN.md, wire constants).
	PayloadAutoVPNNonce   PayloadType = 200
	PayloadContactDetails PayloadType = 201
)

var payloadNames = map[PayloadType]string{
	PayloadSA: "SA", PayloadKE: "KE", PayloadIDi: "IDi", PayloadIDr: "IDr", PayloadCERT: "CERT",
	PayloadCERTREQ: "CERTREQ", PayloadAUTH: "AUTH", PayloadNonce: "No", PayloadNotify: "N",
	PayloadDelete: "D", PayloadVendor: "V", PayloadTSi: "TSi", PayloadTSr: "TSr", PayloadSK: "SK",
	PayloadCP: "CP", PayloadEAP: "EAP", PayloadSKF: "SKF", PayloadAutoVPNNonce: "AutoVPN-Nonce", PayloadContactDetails: "Contact-Details",
}

func (p PayloadType) String() string {
	if s, ok := payloadNames[p]; ok {
		return s
	}
	return "payload(" + strconv.Itoa(int(p)) + ")"
}

// ProtocolID names the protocol of a proposal, notify or delete (§3.3.1).
type ProtocolID uint8

// Protocol IDs.
const (
	ProtoIKE ProtocolID = 1
	ProtoAH  ProtocolID = 2
	ProtoESP ProtocolID = 3
)

// TransformType is a transform's type (§3.3.2).
type TransformType uint8

// Transform types.
const (
	TransformENCR  TransformType = 1
	TransformPRF   TransformType = 2
	TransformINTEG TransformType = 3
	TransformDH    TransformType = 4
	TransformESN   TransformType = 5
)

// Transform IDs used by oevpn.
const (
	ENCR_AES_CBC           = 12
	ENCR_AES_GCM_16        = 20
	ENCR_CHACHA20_POLY1305 = 28

	PRF_HMAC_SHA2_256 = 5
	PRF_HMAC_SHA2_384 = 6
	PRF_HMAC_SHA2_512 = 7

	AUTH_NONE              = 0
	AUTH_HMAC_SHA2_256_128 = 12
	AUTH_HMAC_SHA2_384_192 = 13
	AUTH_HMAC_SHA2_512_256 = 14

	DH_NONE       = 0
	DH_MODP_2048  = 14
	DH_ECP_256    = 19
	DH_CURVE25519 = 31

	ESN_NO  = 0
	ESN_YES = 1
)

// attrKeyLength is the Key Length transform attribute (§3.3.5), TV format.
const attrKeyLength = 14

// AuthMethod is the AUTH payload's method (§3.8, RFC 7427, RFC 7619).
type AuthMethod uint8

// Authentication methods.
const (
	AuthRSA         AuthMethod = 1
	AuthPSK         AuthMethod = 2
	AuthDSS         AuthMethod = 3
	AuthECDSA256    AuthMethod = 9
	AuthNULL        AuthMethod = 13 // RFC 7619
	AuthDigitalSign AuthMethod = 14 // RFC 7427
)

// IDType is an identification payload's type (§3.5, RFC 7619).
type IDType uint8

// Identification types.
const (
	IDIPv4     IDType = 1
	IDFQDN     IDType = 2
	IDRFC822   IDType = 3
	IDIPv6     IDType = 5
	IDDERASN1D IDType = 9
	IDKeyID    IDType = 11
	IDNull     IDType = 13
)

// Certificate encodings (§3.6, RFC 7670).
const (
	CertX509Signature = 4
	CertRawPublicKey  = 15
)

// Traffic selector types (§3.13.1).
const (
	TSIPv4Range = 7
	TSIPv6Range = 8
)

// NotifyType is a notify message type (§3.10.1).
type NotifyType uint16

// Error notify types.
const (
	UNSUPPORTED_CRITICAL_PAYLOAD NotifyType = 1
	INVALID_IKE_SPI              NotifyType = 4
	INVALID_MAJOR_VERSION        NotifyType = 5
	INVALID_SYNTAX               NotifyType = 7
	INVALID_MESSAGE_ID           NotifyType = 9
	INVALID_SPI                  NotifyType = 11
	NO_PROPOSAL_CHOSEN           NotifyType = 14
	INVALID_KE_PAYLOAD           NotifyType = 17
	AUTHENTICATION_FAILED        NotifyType = 24
	SINGLE_PAIR_REQUIRED         NotifyType = 34
	NO_ADDITIONAL_SAS            NotifyType = 35
	INTERNAL_ADDRESS_FAILURE     NotifyType = 36
	FAILED_CP_REQUIRED           NotifyType = 37
	TS_UNACCEPTABLE              NotifyType = 38
	INVALID_SELECTORS            NotifyType = 39
	TEMPORARY_FAILURE            NotifyType = 43
	CHILD_SA_NOT_FOUND           NotifyType = 44
)

// Status notify types.
const (
	INITIAL_CONTACT               NotifyType = 16384
	SET_WINDOW_SIZE               NotifyType = 16385
	ADDITIONAL_TS_POSSIBLE        NotifyType = 16386
	IPCOMP_SUPPORTED              NotifyType = 16387
	NAT_DETECTION_SOURCE_IP       NotifyType = 16388
	NAT_DETECTION_DESTINATION_IP  NotifyType = 16389
	COOKIE                        NotifyType = 16390
	USE_TRANSPORT_MODE            NotifyType = 16391
	REKEY_SA                      NotifyType = 16393
	ESP_TFC_PADDING_NOT_SUPPORTED NotifyType = 16394
	NON_FIRST_FRAGMENTS_ALSO      NotifyType = 16395
	MOBIKE_SUPPORTED              NotifyType = 16396
	MULTIPLE_AUTH_SUPPORTED       NotifyType = 16404
	IKEV2_FRAGMENTATION_SUPPORTED NotifyType = 16430 // RFC 7383
	SIGNATURE_HASH_ALGORITHMS     NotifyType = 16431 // RFC 7427
	CHILDLESS_IKEV2_SUPPORTED     NotifyType = 16418 // RFC 6023

	// AutoVPN private-use status notify (DESIGN.md, wire constants).
	AUTOVPN_SHARED_SECRET NotifyType = 40970
)

var notifyNames = map[NotifyType]string{
	UNSUPPORTED_CRITICAL_PAYLOAD: "UNSUPPORTED_CRITICAL_PAYLOAD", INVALID_IKE_SPI: "INVALID_IKE_SPI",
	INVALID_MAJOR_VERSION: "INVALID_MAJOR_VERSION", INVALID_SYNTAX: "INVALID_SYNTAX",
	INVALID_MESSAGE_ID: "INVALID_MESSAGE_ID", INVALID_SPI: "INVALID_SPI", NO_PROPOSAL_CHOSEN: "NO_PROPOSAL_CHOSEN",
	INVALID_KE_PAYLOAD: "INVALID_KE_PAYLOAD", AUTHENTICATION_FAILED: "AUTHENTICATION_FAILED",
	SINGLE_PAIR_REQUIRED: "SINGLE_PAIR_REQUIRED", NO_ADDITIONAL_SAS: "NO_ADDITIONAL_SAS",
	INTERNAL_ADDRESS_FAILURE: "INTERNAL_ADDRESS_FAILURE", FAILED_CP_REQUIRED: "FAILED_CP_REQUIRED",
	TS_UNACCEPTABLE: "TS_UNACCEPTABLE", INVALID_SELECTORS: "INVALID_SELECTORS",
	TEMPORARY_FAILURE: "TEMPORARY_FAILURE", CHILD_SA_NOT_FOUND: "CHILD_SA_NOT_FOUND",
	INITIAL_CONTACT: "INITIAL_CONTACT", NAT_DETECTION_SOURCE_IP: "NAT_DETECTION_SOURCE_IP",
	NAT_DETECTION_DESTINATION_IP: "NAT_DETECTION_DESTINATION_IP", COOKIE: "COOKIE",
	USE_TRANSPORT_MODE: "USE_TRANSPORT_MODE", REKEY_SA: "REKEY_SA",
	IKEV2_FRAGMENTATION_SUPPORTED: "IKEV2_FRAGMENTATION_SUPPORTED", SIGNATURE_HASH_ALGORITHMS: "SIGNATURE_HASH_ALGORITHMS",
	AUTOVPN_SHARED_SECRET: "AUTOVPN_SHARED_SECRET",
}

func (n NotifyType) String() string {
	if s, ok := notifyNames[n]; ok {
		return s
	}
	return "notify(" + strconv.Itoa(int(n)) + ")"
}

// IsError reports whether the notify type is an error (below 16384).
func (n NotifyType) IsError() bool { return n < 16384 }

// Error makes error notify types usable as errors, like crypto/tls's alert.
func (n NotifyType) Error() string { return "ike: " + n.String() }

// Hash algorithm identifiers for SIGNATURE_HASH_ALGORITHMS (RFC 7427 §4).
const (
	HashSHA2_256 = 2
	HashSHA2_384 = 3
	HashSHA2_512 = 4
	HashIdentity = 5
)
