-- wrk: POST a small body to every request (as a client of a model would).
wrk.method = "POST"
wrk.body = "x"
