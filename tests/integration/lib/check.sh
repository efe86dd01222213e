# check.sh — the integration scripts' pass/fail bookkeeping (source this file).
#   ok MSG / bad MSG   count a passed / failed check and print "ok   MSG" / "FAIL MSG"
#   finish             print "N passed, M failed" and exit (status 1 if anything failed)
pass=0 fail=0
ok()  { pass=$((pass + 1)); echo "ok   $*"; }
bad() { fail=$((fail + 1)); echo "FAIL $*"; }
finish() { echo "$pass passed, $fail failed"; [[ $fail -eq 0 ]]; exit $?; }
