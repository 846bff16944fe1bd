/* bridge/token: channel tokens signed by the backend with a shared secret (docs/bridge.md
 * "Tokens"): "v1.<expiry>.<base64url(HMAC-SHA256(secret, "segq-bridge-v1\n" channel "\n"
 * expiry))>", with OpenSSL's HMAC and a constant-time comparison. Also the channel names.
 * Threads: any (pure functions). */
#include <inttypes.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdio.h>
#include <string.h>

#include "bridge/bridge.h"
#include "proto/proto.h"

#define TOKEN_DOMAIN "segq-bridge-v1\n"
#define SIG_B64_LEN 43 /* 32 bytes in base64url without padding */

int sq_bridge_channel_parse(const char *channel, sq_channel_kind_t *kind, const char **name) {
  if (!channel) return SQ_ECHANNEL;
  const char *n;
  sq_channel_kind_t k;
  if (strncmp(channel, "job:", 4) == 0) {
    k = SQ_CHANNEL_JOB;
    n = channel + 4;
  } else if (strncmp(channel, "group:", 6) == 0) {
    k = SQ_CHANNEL_GROUP;
    n = channel + 6;
  } else {
    return SQ_ECHANNEL;
  }
  if (!sq_proto_valid_name(n, strlen(n), SQ_PROTO_MAX_ID)) return SQ_ECHANNEL;
  if (kind) *kind = k;
  if (name) *name = n;
  return 0;
}

/* base64url of the 32-byte MAC into out[SIG_B64_LEN + 1]. */
static int sign(const uint8_t *secret, size_t secret_len, const char *channel, uint64_t expires_s,
                char out[SIG_B64_LEN + 1]) {
  char msg[sizeof TOKEN_DOMAIN + SQ_CHANNEL_MAX + 32];
  int n = snprintf(msg, sizeof msg, TOKEN_DOMAIN "%s\n%" PRIu64, channel, expires_s);
  if (n < 0 || (size_t)n >= sizeof msg) return SQ_EINVAL;
  unsigned char mac[EVP_MAX_MD_SIZE];
  unsigned int mac_len = 0;
  if (!HMAC(EVP_sha256(), secret, (int)secret_len, (const unsigned char *)msg, (size_t)n, mac,
            &mac_len) ||
      mac_len != 32)
    return SQ_EINTERNAL;
  unsigned char b64[48];
  int len = EVP_EncodeBlock(b64, mac, 32); /* 44 chars, one '=' */
  if (len != 44) return SQ_EINTERNAL;
  for (int i = 0; i < SIG_B64_LEN; i++)
    out[i] = b64[i] == '+' ? '-' : b64[i] == '/' ? '_' : (char)b64[i];
  out[SIG_B64_LEN] = '\0';
  OPENSSL_cleanse(mac, sizeof mac);
  return 0;
}

int sq_bridge_token_mint(const uint8_t *secret, size_t secret_len, const char *channel,
                         uint64_t expires_s, char *out, size_t out_len) {
  if (!secret || secret_len == 0 || sq_bridge_channel_parse(channel, NULL, NULL) != 0)
    return SQ_EINVAL;
  char sig[SIG_B64_LEN + 1];
  int rc = sign(secret, secret_len, channel, expires_s, sig);
  if (rc) return rc;
  int n = snprintf(out, out_len, "v1.%" PRIu64 ".%s", expires_s, sig);
  return n < 0 || (size_t)n >= out_len ? SQ_EINVAL : 0;
}

int sq_bridge_token_check(const uint8_t *secret, size_t secret_len, const char *channel,
                          const char *token, uint64_t now_s, sq_error_t *err) {
  if (!token || !token[0])
    return sq_error_set(err, SQ_ETOKEN_MISSING, "no token: the backend must sign this channel");
  size_t len = strlen(token);
  if (len > SQ_BRIDGE_TOKEN_MAX || strncmp(token, "v1.", 3) != 0)
    return sq_error_set(err, SQ_ETOKEN_MALFORMED, "token is not v1.<expiry>.<signature>");
  const char *p = token + 3;
  uint64_t exp = 0;
  const char *digits = p;
  for (; *p >= '0' && *p <= '9'; p++) {
    if (exp > (UINT64_MAX - 9) / 10)
      return sq_error_set(err, SQ_ETOKEN_MALFORMED, "token expiry is out of range");
    exp = exp * 10 + (uint64_t)(*p - '0');
  }
  if (p == digits || *p != '.' || strlen(p + 1) != SIG_B64_LEN)
    return sq_error_set(err, SQ_ETOKEN_MALFORMED, "token is not v1.<expiry>.<signature>");
  char want[SIG_B64_LEN + 1];
  if (!secret || secret_len == 0 || sign(secret, secret_len, channel, exp, want) != 0)
    return sq_error_set(err, SQ_ETOKEN_INVALID, "token cannot be checked for %s", channel);
  /* Signature first, so an expired token is only called expired when it is genuine. */
  if (CRYPTO_memcmp(want, p + 1, SIG_B64_LEN) != 0)
    return sq_error_set(err, SQ_ETOKEN_INVALID, "token was not signed for channel %s", channel);
  if (exp <= now_s)
    return sq_error_set(err, SQ_ETOKEN_EXPIRED, "token expired %" PRIu64 " s ago", now_s - exp);
  return 0;
}
