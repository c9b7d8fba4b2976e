/*
 * store_format_state: the exact strings the gem writes (Integer#to_s,
 * Float#to_s) and reads back with to_i / to_f.
 */
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>

#include "store.h"

typedef struct formatted {
  char depth[STORE_INT_LEN], last[STORE_FLOAT_LEN], started[STORE_FLOAT_LEN],
      initial[STORE_INT_LEN];
} formatted_t;

static formatted_t fmt(scaler_state_t st) {
  formatted_t f;
  store_format_state(&st, f.depth, f.last, f.started, f.initial);
  return f;
}

Test(store_format, initial_state_is_what_the_gem_writes_at_rest) {
  formatted_t f = fmt(SCALER_STATE_INIT);
  cr_assert_str_eq(f.depth, "0");
  cr_assert_str_eq(f.last, "0.0");
  cr_assert_str_eq(f.started, "0.0");
  cr_assert_str_eq(f.initial, "", "no initial workers: the key is deleted");
}

Test(store_format, in_event) {
  scaler_state_t st = SCALER_STATE_INIT;
  st.depth = 3;
  st.last_alerted = 1700000000.5;
  st.event_started = 1699999900.25;
  st.initial_workers = 1;
  formatted_t f = fmt(st);
  cr_assert_str_eq(f.depth, "3");
  cr_assert_str_eq(f.last, "1700000000.5");
  cr_assert_str_eq(f.started, "1699999900.25");
  cr_assert_str_eq(f.initial, "1");
}

Test(store_format, always_a_decimal_point) {
  scaler_state_t st = SCALER_STATE_INIT;
  st.depth = 1;
  st.last_alerted = 1700000000.0;
  st.event_started = 1.0;
  formatted_t f = fmt(st);
  cr_assert_str_eq(f.last, "1700000000.0");
  cr_assert_str_eq(f.started, "1.0");
}

Test(store_format, microseconds_survive_the_round_trip) {
  scaler_state_t st = SCALER_STATE_INIT;
  st.depth = 1;
  st.last_alerted = 1700000000.123456;
  st.event_started = 1700000000.000001;
  formatted_t f = fmt(st);
  cr_assert_str_eq(f.last, "1700000000.123456");
  cr_assert_str_eq(f.started, "1700000000.000001");
  cr_assert_float_eq(strtod(f.last, NULL), 1700000000.123456, 1e-6);
}

Test(store_format, event_started_is_zero_outside_an_event) {
  scaler_state_t st = SCALER_STATE_INIT;
  st.depth = 0;
  st.event_started = 1700000000.5; /* left over: the gem writes Time.at(0) */
  st.last_alerted = 1700000100.75;
  formatted_t f = fmt(st);
  cr_assert_str_eq(f.started, "0.0");
  cr_assert_str_eq(f.last, "1700000100.75");
}

Test(store_format, initial_zero_is_written_negative_is_deleted) {
  scaler_state_t st = SCALER_STATE_INIT;
  st.initial_workers = 0;
  cr_assert_str_eq(fmt(st).initial, "0", "0 means scaled to zero on purpose");
  st.initial_workers = 10000;
  cr_assert_str_eq(fmt(st).initial, "10000");
  st.initial_workers = -5;
  cr_assert_str_eq(fmt(st).initial, "");
}

Test(store_format, not_a_number_is_written_as_none) {
  scaler_state_t st = SCALER_STATE_INIT;
  st.depth = 1;
  st.last_alerted = NAN;
  st.event_started = INFINITY;
  formatted_t f = fmt(st);
  cr_assert_str_eq(f.last, "0.0");
  cr_assert_str_eq(f.started, "0.0");
}

Test(store_format, huge_values_fit_and_read_back) {
  scaler_state_t st = SCALER_STATE_INIT;
  st.depth = SCALER_DEPTH_LIMIT;
  st.last_alerted = 1e300;
  formatted_t f = fmt(st);
  cr_assert_str_eq(f.depth, "1000000");
  cr_assert_float_eq(strtod(f.last, NULL), 1e300, 1e285);
}

Test(store_format, parse_of_format_is_identity) {
  scaler_state_t st = SCALER_STATE_INIT;
  st.depth = 2;
  st.last_alerted = 1700000000.25;
  st.event_started = 1699999900.5;
  st.initial_workers = 4;
  formatted_t f = fmt(st);
  scaler_state_t back;
  char why[256];
  cr_assert_eq(scaler_state_parse(&back, f.depth, f.last, f.started, f.initial,
                                  1700000001.0, why, sizeof(why)),
               0, "%s", why);
  cr_assert_eq(back.depth, 2);
  cr_assert_eq(back.last_alerted, 1700000000.25);
  cr_assert_eq(back.event_started, 1699999900.5);
  cr_assert_eq(back.initial_workers, 4);
}
