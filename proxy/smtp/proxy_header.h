// Inbound HAProxy PROXY protocol header (v1 text line, v2 binary), as a load balancer in front
// of the gateway sends it before the client's first byte. Pure: a function of the bytes read
// so far, no sockets, no state between calls. The writers toward the backend are in
// proxy/proxy_protocol.h; what they write parses back to the same endpoints.
//
// The contract is haproxy's doc/proxy-protocol.txt, read strictly (the spec asks receivers to
// drop anything that does not match exactly):
//
// v1: "PROXY" SP ("TCP4" | "TCP6") SP src SP dst SP sport SP dport CRLF, or
//     "PROXY" SP "UNKNOWN" [SP anything-but-CR-or-LF] CRLF, the whole line (CRLF included)
//     within 107 bytes.
//   - exactly one space between fields; no leading, trailing or doubled spaces.
//   - TCP4 addresses: dotted quads, 4 decimal numbers 0..255, no leading zeros ("010" could
//     be read as octal), nothing else (an IPv6 address under TCP4 is Invalid).
//   - TCP6 addresses: IPv6 text as inet_pton(AF_INET6) reads it, and it must contain a ':'
//     (a dotted quad under TCP6 is Invalid). The mixed form "::ffff:192.0.2.1" is accepted
//     (inet_ntop writes it, so haproxy does); an IPv4-mapped address becomes an IPv4
//     IpAddress, as everywhere in the gateway, so the two addresses of one TCP6 line may end
//     up in different families.
//   - ports: decimal 0..65535, digits only (no sign, no spaces), no leading zeros: "0" is
//     fine, "025" is Invalid (the spec forbids them, as for the address numbers).
//   - UNKNOWN: anything after it up to the CRLF is ignored (it must start with a space, so
//     "UNKNOWNX" is not UNKNOWN) → Kind::Local.
//   - a bare LF, or a CR not followed by LF, anywhere in the line is Invalid.
// v2: the 12-byte signature \r\n\r\n\0\r\nQUIT\n, a version/command byte, a family/protocol
//     byte, a 16-bit big-endian length, then `length` bytes: the address block and TLVs.
//   - the version nibble must be 2; the command 0 (LOCAL) or 1 (PROXY), others Invalid.
//   - LOCAL (health checks): Kind::Local whatever the family byte and length say (the spec:
//     the receiver "must discard the protocol block including the family").
//   - PROXY with 0x11 (TCP over IPv4) or 0x21 (TCP over IPv6) → Proxied; the length must
//     cover the address block (12 or 36 bytes).
//   - PROXY with 0x00 (UNSPEC) → Local: the spec says the receiver should ignore the
//     address information, so the length is skipped unread.
//   - PROXY with UDP (0x12, 0x22) or AF_UNIX (0x31, 0x32) → Invalid. The spec lets a
//     receiver fall back to the real connection's addresses here, but SMTP is TCP: a proxy
//     announcing a datagram or a UNIX-socket client is misconfigured, and accepting it would
//     silently judge the client by the proxy's own address. Any other byte is Invalid, as the
//     spec demands.
//   - the bytes after the address block (TLVs: SSL, ALPN, unique id, cloud vendors' ids) are
//     skipped, not parsed, but are part of the header (counted in `consumed`).
//
// Deciding early: every byte is judged as it arrives, so a prefix that no valid header can
// start with is Invalid at once (a first byte other than 'P' or '\r' at the first byte, a
// doubled space at the second space, a letter in a port at the letter), and the result for a
// prefix is never changed by the bytes after it: once a call returns Done or Invalid, calling
// again with more bytes appended returns exactly the same result.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "policy/ip_address.h"

namespace smtpgate::smtp {

// The longest v1 line the spec allows, CRLF included ("PROXY UNKNOWN" with two full IPv6
// addresses and ports); without a CRLF by then the line is Invalid.
inline constexpr size_t kMaxProxyV1Line = 107;
// The fixed part of a v2 header: signature, version/command, family/protocol, length.
inline constexpr size_t kProxyV2Fixed = 16;

// The most bytes a caller needs to buffer before parse_proxy_header decides (Done or
// Invalid): a v2 header is 16 + its length bytes, and a v2 header longer than this in total
// is Invalid. The spec sets no bound (the length field allows 16 + 65535), but what a
// receiver needs is at most the 36-byte address block plus TLVs that real senders keep to a
// few hundred bytes (haproxy's SSL TLV with a client certificate's CN, a unique id of at most
// 128 bytes, an authority/SNI of at most 255, ALPN, a cloud load balancer's endpoint id). A
// bound keeps the bytes one connection can make the gateway hold before its first SMTP byte
// small and fixed, and one read buffer always enough.
inline constexpr size_t kMaxProxyHeader = 4096;
static_assert(kMaxProxyHeader >= kMaxProxyV1Line);

struct ProxyHeader {
  // Proxied: the addresses below are the client's. Local: a v2 LOCAL command, a v2 PROXY
  // with AF_UNSPEC, or v1 "UNKNOWN" (health checks and the like): use the connection's own
  // addresses, the header says nothing about a client.
  enum class Kind : uint8_t { Proxied, Local };
  Kind kind = Kind::Local;
  // Proxied only (default-constructed for Local): the client (source) and the address it
  // connected to (destination). IPv4-mapped IPv6 addresses are stored as IPv4.
  IpAddress source, destination;
  uint16_t source_port = 0, destination_port = 0;  // Proxied only, 0 for Local
  uint8_t version = 0;  // Done: which protocol version the header was, 1 or 2 (for the log)

  friend bool operator==(const ProxyHeader&, const ProxyHeader&) = default;
};

struct ProxyParse {
  enum class Status : uint8_t {
    NeedMore,  // every byte so far can start a valid header; call again with more
    Done,      // a complete, valid header: `consumed` and `header` are set
    Invalid,   // no header can start with these bytes: `error` says why; drop the connection
  };
  Status status = Status::NeedMore;
  // Done: the length of the header (v1: up to and including the CRLF; v2: 16 + length); the
  // bytes after it are the client's first SMTP bytes. 0 for NeedMore and Invalid.
  size_t consumed = 0;
  ProxyHeader header;  // Done
  // Invalid: why, short and constant (printable ASCII, never any of the input's bytes), fit
  // for a log line. Empty otherwise.
  std::string error;

  friend bool operator==(const ProxyParse&, const ProxyParse&) = default;
};

// `received`: every byte read from the connection so far (the caller appends and calls again
// on NeedMore, with the whole buffer each time). Decides as early as the bytes allow, and
// never returns NeedMore once received.size() >= kMaxProxyHeader. Reads at most
// kMaxProxyHeader bytes of `received`.
ProxyParse parse_proxy_header(std::string_view received);

}  // namespace smtpgate::smtp
