"""A Wavix emulator: REST API, call-event webhooks and media gateway together.

``callrec simulate --emulate-wavix`` and the tests run the whole control-plane flow
without Wavix: calls are placed (``calls``), their events posted to a webhook
(``webhook``), the REST API answers stream requests (``rest``) and the media gateway
streams each call's audio to the ``stream_url`` asked for, from the call's current
position, until the stream is deleted or the call ends (``gateway``).

Which behaviours are Wavix facts and which are assumptions is listed in
docs/control.md, "The Wavix emulator".
"""
