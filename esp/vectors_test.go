package esp

// Published ESP known-answer tests.
//
// Sources:
//
//   - draft-mcgrew-gcm-test-01, "Test Cases for the use of Galois/Counter Mode
//     (GCM) and Galois Message Authentication Code (GMAC) in IPsec ESP"
//     (D. McGrew, March 2009), Section 4 "Test Cases". The draft does not number
//     its test cases; "case N" below is the N-th test case in order of
//     appearance in Section 4 (the draft page is given next to each one). The
//     draft gives a 12-octet GCM nonce; per RFC 4106 it is salt || IV, so the
//     salt is its first 4 octets and the IV its last 8 (the IV also appears in
//     the draft's "packet" field right after SPI || seq). The draft's "key" is
//     the AES key without the salt. Its "ctext+tag" is copied into sealed, and
//     a "seq" of 8 octets is an extended (64-bit) sequence number.
//
//     Skipped draft cases:
//       - case 7 (page 12, second case): AES-GCM with a 192-bit key
//         (feffe9928665731c6d6a8f9467308308feffe9928665731c, 24 octets); only
//         128- and 256-bit keys are used here.
//       - case 15 (page 19): AES-GMAC-ESP (RFC 4543, ENCR_NULL_AUTH_AES_GMAC),
//         authentication only with no encryption; not an AES-GCM case.
//
//   - RFC 7634, Appendix A "ESP Example" (ChaCha20-Poly1305 in ESP). The RFC
//     gives KEYMAT as 36 octets: the 32-octet key followed by the 4-octet salt.

// espVector is one published ESP known-answer test.
type espVector struct {
	name      string // e.g. "draft-mcgrew-gcm-test-01 case 2"
	transform string // "aes-gcm-128", "aes-gcm-256" or "chacha20-poly1305"
	key       string // hex: encryption key WITHOUT the salt
	salt      string // hex: 4-octet salt
	spi       uint32
	seq       uint64 // full sequence number; for ESN cases the 64-bit value (high<<32|low)
	esn       bool   // true when the AAD carries the 64-bit extended sequence number
	iv        string // hex: the 8-octet explicit IV carried in the packet
	plaintext string // hex: the ESP payload to encrypt: inner packet || padding || pad length || next header
	aad       string // hex: the AAD as published (SPI||seq or SPI||seq-hi||seq-lo)
	sealed    string // hex: ciphertext || 16-octet ICV
}

var espVectors = []espVector{
	{
		// draft page 7.
		name:      "draft-mcgrew-gcm-test-01 case 1",
		transform: "aes-gcm-128",
		key:       "4c80cdefbb5d10da906ac73c3613a634",
		salt:      "2e443b68",
		spi:       0x00004321,
		seq:       0x8765432100000000,
		esn:       true,
		iv:        "4956ed7e3b244cfe",
		plaintext: "45000048699a000080114db7c0a80102" +
			"c0a801010a9bf15638d3010000010000" +
			"00000000045f736970045f7564700373" +
			"69700963796265726369747902646b00" +
			"0021000101020201",
		aad: "000043218765432100000000",
		sealed: "fecf537e729d5b07dc30df528dd22b76" +
			"8d1b98736696a6fd348509fa13ceac34" +
			"cfa2436f14a3f3cf65925bf1f4a13c5d" +
			"15b21e1884f5ff6247aeabb786b93bce" +
			"61bc17d768fd9732459018148f6cbe72" +
			"2fd04796562dfdb4",
	},
	{
		// draft page 8.
		name:      "draft-mcgrew-gcm-test-01 case 2",
		transform: "aes-gcm-128",
		key:       "feffe9928665731c6d6a8f9467308308",
		salt:      "cafebabe",
		spi:       0x0000a5f8,
		seq:       0x0000000a,
		esn:       false,
		iv:        "facedbaddecaf888",
		plaintext: "4500003e698f000080114dccc0a80102" +
			"c0a801010a980035002a2343b2d00100" +
			"00010000000000000373697009637962" +
			"65726369747902646b00000100010001",
		aad: "0000a5f80000000a",
		sealed: "deb22cd9b07c72c16e3a65beeb8df304" +
			"a5a5897d33ae530f1ba76d5d114d2a5c" +
			"3de81827c10e9a4f51330d0eec416642" +
			"cfbb85a5b47e48a4ec3b9ba95d918bd1" +
			"83b70d3aa8bc6ee4c309e9d85a41ad4a",
	},
	{
		// draft page 9.
		name:      "draft-mcgrew-gcm-test-01 case 3",
		transform: "aes-gcm-256",
		key: "abbccddef00112233445566778899aab" +
			"abbccddef00112233445566778899aab",
		salt: "11223344",
		spi:  0x4a2cbfe3,
		seq:  0x00000002,
		esn:  false,
		iv:   "0102030405060708",
		plaintext: "4500003069a6400080062690c0a80102" +
			"9389155e0a9e008b2dc57ee000000000" +
			"7002400020bf0000020405b401010402" +
			"01020201",
		aad: "4a2cbfe300000002",
		sealed: "ff425c9b724599df7a3bcd510194e00d" +
			"6a78107f1b0b1cbf06efae9d65a5d763" +
			"748a637985771d347f0545659f14e99d" +
			"ef842d8eb335f4eecfdbf831824b4c49" +
			"15956c96",
	},
	{
		// draft page 10.
		name:      "draft-mcgrew-gcm-test-01 case 4",
		transform: "aes-gcm-128",
		key:       "00000000000000000000000000000000",
		salt:      "00000000",
		spi:       0x00000000,
		seq:       0x00000001,
		esn:       false,
		iv:        "0000000000000000",
		plaintext: "4500003c99c500008001cb7a40679318" +
			"010101010800075c0200440061626364" +
			"65666768696a6b6c6d6e6f7071727374" +
			"75767761626364656667686901020201",
		aad: "0000000000000001",
		sealed: "4688daf2f973a392732909c331d56d60" +
			"f694abaa414b5e7ff5fdcdfff5e9a284" +
			"456476492719ffb64de7d9dca1e1d894" +
			"bc3bd57873ed4d181d19d4d5c8c18af3" +
			"f821d496eeb096e98ad2b69e4799c71d",
	},
	{
		// draft page 11.
		name:      "draft-mcgrew-gcm-test-01 case 5",
		transform: "aes-gcm-128",
		key:       "3de09874b388e6491988d0c3607eae1f",
		salt:      "57690e43",
		spi:       0x42f67e3f,
		seq:       0x1010101010101010,
		esn:       true,
		iv:        "4e280000a2fca1a3",
		plaintext: "4500003c99c300008001cb7c40679318" +
			"010101010800085c0200430061626364" +
			"65666768696a6b6c6d6e6f7071727374" +
			"75767761626364656667686901020201",
		aad: "42f67e3f1010101010101010",
		sealed: "fba2caa4853cf9f0f22cb10d86dd83b0" +
			"fec75691cf1a04b00d1138ec9c357917" +
			"65acbd8701ad79845bf9fe3fba487bc9" +
			"1755e6662b4c8d0d1f5e22739530320a" +
			"e0d731cc978ecafaeae88f00e80d6e48",
	},
	{
		// draft page 12, first case.
		name:      "draft-mcgrew-gcm-test-01 case 6",
		transform: "aes-gcm-128",
		key:       "3de09874b388e6491988d0c3607eae1f",
		salt:      "57690e43",
		spi:       0x42f67e3f,
		seq:       0x1010101010101010,
		esn:       true,
		iv:        "4e280000a2fca1a3",
		plaintext: "4500001c42a200008001441f406793b6" +
			"e00000020a00f5ff01020201",
		aad: "42f67e3f1010101010101010",
		sealed: "fba2ca845e5df9f0f22c3e6e86dd831e" +
			"1fc65792cd1af9130e1379ed369f071f" +
			"35e034be95f112e4e7d05d35",
	},
	// case 7 (draft page 12, second case) is skipped: 192-bit AES key.
	{
		// draft page 13.
		name:      "draft-mcgrew-gcm-test-01 case 8",
		transform: "aes-gcm-128",
		key:       "abbccddef00112233445566778899aab",
		salt:      "decaf888",
		spi:       0x00000100,
		seq:       0x0000000000000001,
		esn:       true,
		iv:        "cafedebaceface74",
		plaintext: "4500004933ba00007f119106c3fb1d10" +
			"c2b1d326c02831ce0035dd7b800302d5" +
			"00004e20001e8c18d75b81dc91baa047" +
			"6b91b924b280389d92c963bac046ec95" +
			"9b6266c04722b14923010101",
		aad: "000001000000000000000001",
		sealed: "18a6fd42f72cbf4ab2a2ea901f73d814" +
			"e3e7f243d95412e1c349c1d2fbec168f" +
			"9190feebaf2cb01984e65863965d7472" +
			"b79da345e0e780191f0d2f0e0f496c22" +
			"6f2127b27db35724e7845d68651f57e6" +
			"5f354f75ff17015769623436",
	},
	{
		// draft page 14.
		name:      "draft-mcgrew-gcm-test-01 case 9",
		transform: "aes-gcm-256",
		key: "abbccddef00112233445566778899aab" +
			"abbccddef00112233445566778899aab",
		salt: "73616c74",
		spi:  0x17405e67,
		seq:  0x156f3126dd0db99b,
		esn:  true,
		iv:   "616e640169766563",
		plaintext: "45080028732c00004006e9f90a010612" +
			"0a01038f06b88023dd6bafbecb712602" +
			"50101f646d540001",
		aad: "17405e67156f3126dd0db99b",
		sealed: "f2d69ecdbd5a0d5b8d5ef38bad4da58d" +
			"1f278fde98ef67549d524a3018d9a57f" +
			"f4d3a31ce673119e451626c2415771e3" +
			"b7eebca614c89b35",
	},
	{
		// draft page 15.
		name:      "draft-mcgrew-gcm-test-01 case 10",
		transform: "aes-gcm-128",
		key:       "3de09874b388e6491988d0c3607eae1f",
		salt:      "57690e43",
		spi:       0x42f67e3f,
		seq:       0x1010101010101010,
		esn:       true,
		iv:        "4e280000a2fca1a3",
		plaintext: "45000049333e00007f119182c3fb1d10" +
			"c2b1d326c02831ce0035cb458003025b" +
			"000001e0001e8c18d65759d52284a035" +
			"2c71475c8880391c764d6e5ee0496b32" +
			"5ae270c03899493915010101",
		aad: "42f67e3f1010101010101010",
		sealed: "fba2cad12fc1f9f00d3cebf305410db8" +
			"3d7784b607323d220f24b0a97d541828" +
			"00cadb0f68d99ef0e0c0c89ae9bea888" +
			"4e52d65bc1afd0740f742444747b5b39" +
			"ab533163aad4550ee5160975cdb608c5" +
			"769189609763b8e18caa81e2",
	},
	{
		// draft page 16.
		name:      "draft-mcgrew-gcm-test-01 case 11",
		transform: "aes-gcm-256",
		key: "abbccddef00112233445566778899aab" +
			"abbccddef00112233445566778899aab",
		salt: "73616c74",
		spi:  0x17405e67,
		seq:  0x156f3126dd0db99b,
		esn:  true,
		iv:   "616e640169766563",
		plaintext: "636973636f0172756c65730174686501" +
			"6e6574776501646566696e6501746865" +
			"746563686e6f6c6f6769657301746861" +
			"7477696c6c01646566696e65746f6d6f" +
			"72726f7701020201",
		aad: "17405e67156f3126dd0db99b",
		sealed: "d4b7ed86a1777f2ea13d6973d324c69e" +
			"7b43f826fb56831226508bebd2dceb18" +
			"d0a6df10e5487df074113e14c641024e" +
			"3e6773d91a62ee429b043a10e3efe6b0" +
			"12a49363412364f8c0cac587f249e56b" +
			"11e24f30e44ccc76",
	},
	{
		// draft page 17, first case. The payload is padding, pad length and
		// next header only.
		name:      "draft-mcgrew-gcm-test-01 case 12",
		transform: "aes-gcm-128",
		key:       "7d773d00c144c525ac619d18c84a3f47",
		salt:      "d9664267",
		spi:       0x335467ae,
		seq:       0xffffffff,
		esn:       false,
		iv:        "43457e9182443bc6",
		plaintext: "01020201",
		aad:       "335467aeffffffff",
		sealed: "437f866bcb3f699fe9b0822bac961c45" +
			"04bef270",
	},
	{
		// draft page 17, second case.
		name:      "draft-mcgrew-gcm-test-01 case 13",
		transform: "aes-gcm-128",
		key:       "abbccddef00112233445566778899aab",
		salt:      "decaf888",
		spi:       0x00000100,
		seq:       0x0000000000000001,
		esn:       true,
		iv:        "cafedebaceface74",
		plaintext: "746f016265016f72016e6f7401746f01" +
			"62650001",
		aad: "000001000000000000000001",
		sealed: "29c9fc69a197d038ccdd14e2ddfcaa05" +
			"43332164412503524303ed3c6c5f2838" +
			"43af8c3e",
	},
	{
		// draft page 18.
		name:      "draft-mcgrew-gcm-test-01 case 14",
		transform: "aes-gcm-256",
		key: "6c6567616c697a656d6172696a75616e" +
			"61616e64646f69746265666f72656961",
		salt: "7475726e",
		spi:  0x796b6963,
		seq:  0xffffffffffffffff,
		esn:  true,
		iv:   "333021696765746d",
		plaintext: "45000030da3a00008001df3bc0a80005" +
			"c0a800010800c6cd0200070061626364" +
			"65666768696a6b6c6d6e6f7071727374" +
			"01020201",
		aad: "796b6963ffffffffffffffff",
		sealed: "f97ab2aa356d8edce17644ac8c78e25d" +
			"d24dedbb29ebf1b64a274b39b49c3a86" +
			"4cd3d78ca4ae68a32b42458fb57dbe82" +
			"1dcc63b9d0937ba2945f669368661a32" +
			"9fb4c053",
	},
	// case 15 (draft page 19) is skipped: AES-GMAC-ESP (null encryption).
	{
		// draft page 20.
		name:      "draft-mcgrew-gcm-test-01 case 16",
		transform: "aes-gcm-128",
		key:       "3de09874b388e6491988d0c3607eae1f",
		salt:      "57690e43",
		spi:       0x3f7ef642,
		seq:       0x1010101010101010,
		esn:       true,
		iv:        "4e280000a2fca1a3",
		plaintext: "45000030da3a00008001df3bc0a80005" +
			"c0a800010800c6cd0200070061626364" +
			"65666768696a6b6c6d6e6f7071727374" +
			"01020201",
		aad: "3f7ef6421010101010101010",
		sealed: "fba2caa8c6c5f9f0f22ca54a061210ad" +
			"3f6e5791cf1aca210d117cec9c357917" +
			"65acbd8701ad79845bf9fe3fba487bc9" +
			"6321930684eecadb56912546e7a95c97" +
			"40d7cb05",
	},
	{
		// draft page 21.
		name:      "draft-mcgrew-gcm-test-01 case 17",
		transform: "aes-gcm-128",
		key:       "4c80cdefbb5d10da906ac73c3613a634",
		salt:      "22433c64",
		spi:       0x00004321,
		seq:       0x8765432100000007,
		esn:       true,
		iv:        "4855ec7d3a234bfd",
		plaintext: "0800c6cd020007006162636465666768" +
			"696a6b6c6d6e6f707172737401020201",
		aad: "000043218765432100000007",
		sealed: "74752e8aeb5d873cd7c0f4acc36c4bff" +
			"84b7d7b98f0ca8b6acda6894bc619069" +
			"ef9cbc28fe1b56a7c4e0d58c86cd2bc0",
	},
	{
		// RFC 7634 Appendix A: tunnel-mode ESP carrying an ICMP echo request.
		name:      "RFC 7634 Appendix A",
		transform: "chacha20-poly1305",
		key: "80 81 82 83 84 85 86 87 88 89 8a 8b 8c 8d 8e 8f " +
			"90 91 92 93 94 95 96 97 98 99 9a 9b 9c 9d 9e 9f",
		salt: "a0 a1 a2 a3",
		spi:  0x01020304,
		seq:  0x00000005,
		esn:  false,
		iv:   "10 11 12 13 14 15 16 17",
		plaintext: "45 00 00 54 a6 f2 00 00 40 01 e7 78 c6 33 64 05 " +
			"c0 00 02 05 08 00 5b 7a 3a 08 00 00 55 3b ec 10 " +
			"00 07 36 27 08 09 0a 0b 0c 0d 0e 0f 10 11 12 13 " +
			"14 15 16 17 18 19 1a 1b 1c 1d 1e 1f 20 21 22 23 " +
			"24 25 26 27 28 29 2a 2b 2c 2d 2e 2f 30 31 32 33 " +
			"34 35 36 37 01 02 02 04",
		aad: "01 02 03 04 00 00 00 05",
		sealed: "24 03 94 28 b9 7f 41 7e 3c 13 75 3a 4f 05 08 7b " +
			"67 c3 52 e6 a7 fa b1 b9 82 d4 66 ef 40 7a e5 c6 " +
			"14 ee 80 99 d5 28 44 eb 61 aa 95 df ab 4c 02 f7 " +
			"2a a7 1e 7c 4c 4f 64 c9 be fe 2f ac c6 38 e8 f3 " +
			"cb ec 16 3f ac 46 9b 50 27 73 f6 fb 94 e6 64 da " +
			"91 65 b8 28 29 f6 41 e0 " +
			"76 aa a8 26 6b 7f b0 f7 b1 1b 36 99 07 e1 ad 43",
	},
}
