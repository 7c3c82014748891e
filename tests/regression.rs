//! Regressions: each test is named after what broke and says in one comment what it was.

use crate::support::history::mask_log;
use crate::support::short;
use crate::support::site::{PUSHER, env_with_two_releases};

// Regression: the slot column is formatted with `{:<5}`, and `Slot`'s `Display` used
// `write_str`, which ignores the width, so `blue` rows were one column short of `green` ones.
#[test]
fn log_columns_line_up_whatever_the_slot() {
    let (env, a, b) = env_with_two_releases("");

    let log = env.pushdeploy().args(["log", "--repo"]).arg(&env.bare).success();

    let expected = format!(
        "TIME  {b}  live    green  refs/heads/main  (push by {PUSHER}; live after N s, total N s)\n\
         TIME  {a}  live    blue   refs/heads/main  (push by {PUSHER}; live after N s, total N s)\n",
        a = short(&a),
        b = short(&b),
    );
    assert_eq!(mask_log(&log.stdout), expected, "{log}");
}
