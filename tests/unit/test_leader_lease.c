/*
 * The lease arithmetic on its own: when a lease granted by a command sent
 * at a given instant ends, the default margin, timing validation, and the
 * shape of the id.
 */
#include <criterion/criterion.h>
#include <math.h>
#include <string.h>

#include "leader.h"

#define S 1000000000ULL /* ns per second */

Test(lease, ends_ttl_minus_margin_after_the_send) {
  uint64_t sent = 1000 * S;
  cr_assert_eq(leader_lease_end(sent, 15, 2.5), sent + 12 * S + S / 2);
  cr_assert(leader_lease_valid(sent, sent, 15, 2.5));
  cr_assert(leader_lease_valid(sent + 12 * S + S / 2 - 1, sent, 15, 2.5));
  cr_assert_not(leader_lease_valid(sent + 12 * S + S / 2, sent, 15, 2.5),
                "the end itself is already outside");
  cr_assert_not(leader_lease_valid(sent + 20 * S, sent, 15, 2.5));
}

Test(lease, a_slow_reply_only_shortens_the_belief) {
  /* The same reply, received later, grants nothing beyond sent + ttl -
   * margin: the end depends on the send time alone. */
  uint64_t sent = 50 * S;
  uint64_t end = leader_lease_end(sent, 3, 0.5);
  for (uint64_t reply = sent; reply < sent + 4 * S; reply += S / 4)
    cr_assert_eq(leader_lease_valid(reply, sent, 3, 0.5), reply < end);
  /* and it always ends before the server's TTL, which starts at or after
   * the send */
  cr_assert_lt(end, sent + 3 * S);
}

Test(lease, zero_margin_ends_exactly_at_ttl_and_margin_never_underflows) {
  cr_assert_eq(leader_lease_end(7, 1, 0), 7 + S);
  cr_assert_eq(leader_lease_end(7, 1, 5), 7, "a margin beyond the ttl grants nothing");
  cr_assert_not(leader_lease_valid(7, 7, 1, 5));
}

Test(lease, ms_until_rounds_up_and_stops_at_zero) {
  cr_assert_eq(leader_ms_until(0, 0), 0);
  cr_assert_eq(leader_ms_until(10, 5), 0);
  cr_assert_eq(leader_ms_until(0, 1), 1, "a timer must not fire before the end");
  cr_assert_eq(leader_ms_until(0, 1000000), 1);
  cr_assert_eq(leader_ms_until(0, 1000001), 2);
  cr_assert_eq(leader_ms_until(S, 3 * S), 2000);
}

Test(margin, default_is_half_a_tick_or_a_tenth_capped_by_the_slack) {
  cr_assert_float_eq(leader_default_margin(15, 5), 2.5, 1e-9);  /* 3 x 5 s polls */
  cr_assert_float_eq(leader_default_margin(3, 1), 0.5, 1e-9);
  cr_assert_float_eq(leader_default_margin(10, 1), 1.0, 1e-9);  /* ttl / 10 */
  cr_assert_float_eq(leader_default_margin(10, 9), 0.5, 1e-9);  /* (ttl - tick) / 2 */
  /* whatever the inputs, the default passes validation */
  char err[256];
  double ttls[] = {0.001, 0.3, 1, 3, 15, 60, 3600};
  double fracs[] = {0.01, 0.1, 1.0 / 3, 0.5, 0.9, 0.99};
  for (size_t i = 0; i < sizeof(ttls) / sizeof(ttls[0]); i++)
    for (size_t j = 0; j < sizeof(fracs) / sizeof(fracs[0]); j++) {
      double ttl = ttls[i], tick = ttl * fracs[j];
      double m = leader_default_margin(ttl, tick);
      cr_assert_eq(leader_check_timing(ttl, tick, m, err, sizeof(err)), 0,
                   "ttl %g tick %g margin %g: %s", ttl, tick, m, err);
      /* a renewal answered within the slack always extends the belief */
      cr_assert_gt(ttl - m, tick);
    }
}

Test(timing, rejects_what_would_lapse) {
  char err[256];
  cr_assert_eq(leader_check_timing(3, 1, 0.5, err, sizeof(err)), 0);
  cr_assert_eq(leader_check_timing(3, 1, 0, err, sizeof(err)), 0);
  cr_assert_eq(leader_check_timing(0, 1, 0, err, sizeof(err)), -1);
  cr_assert(strstr(err, "ttl") != NULL);
  cr_assert_eq(leader_check_timing(3, 3, 0.1, err, sizeof(err)), -1);
  cr_assert(strstr(err, "tick") != NULL, "%s", err);
  cr_assert_eq(leader_check_timing(3, 0, 0.1, err, sizeof(err)), -1);
  cr_assert_eq(leader_check_timing(3, 1, 2, err, sizeof(err)), -1);
  cr_assert(strstr(err, "margin") != NULL, "%s", err);
  cr_assert_eq(leader_check_timing(3, 1, -1, err, sizeof(err)), -1);
  cr_assert_eq(leader_check_timing(NAN, 1, 0, err, sizeof(err)), -1);
  cr_assert_eq(leader_check_timing(3, NAN, 0, err, sizeof(err)), -1);
  cr_assert_eq(leader_check_timing(3, 1, NAN, err, sizeof(err)), -1);
}

Test(id, identity_pid_and_random_hex) {
  const unsigned char rnd[8] = {0x00, 0x01, 0xab, 0xcd, 0xef, 0x10, 0x7f, 0xff};
  char buf[LEADER_ID_MAX];
  size_t n = leader_format_id(buf, sizeof(buf), "worker.3", 42, rnd);
  cr_assert_str_eq(buf, "worker.3:42:0001abcdef107fff");
  cr_assert_eq(n, strlen(buf));
  leader_format_id(buf, sizeof(buf), NULL, 7, rnd);
  cr_assert_str_eq(buf, "unknown:7:0001abcdef107fff");
}

Test(id, a_long_identity_is_cut_never_the_random_tail) {
  const unsigned char rnd[8] = {1, 2, 3, 4, 5, 6, 7, 8};
  char longname[400];
  memset(longname, 'h', sizeof(longname) - 1);
  longname[sizeof(longname) - 1] = '\0';
  char buf[LEADER_ID_MAX];
  size_t n = leader_format_id(buf, sizeof(buf), longname, 12345, rnd);
  cr_assert_eq(n, sizeof(buf) - 1);
  cr_assert_eq(strlen(buf), n);
  const char *tail = ":12345:0102030405060708";
  cr_assert_str_eq(buf + n - strlen(tail), tail);
  char tiny[5];
  leader_format_id(tiny, sizeof(tiny), "x", 1, rnd);
  cr_assert_eq(strlen(tiny), 4, "always terminated within size");
}
