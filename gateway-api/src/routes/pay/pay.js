// The customer's screen: follows the session's event stream and shows
// "12.50 EUR of 20.00 EUR inserted", then paid/cancelling/cancelled with the
// change or refund due. Late credits (money that arrives after the session
// stopped being open) update the change or refund; the stream is followed
// until the session is final. Amounts arrive in minor units with the
// currency's exponent.
(function () {
  "use strict";
  var body = document.body;
  var id = body.getAttribute("data-session");
  var token = body.getAttribute("data-token");
  var amount = document.getElementById("amount");
  var status = document.getElementById("status");

  function money(minor, exponent, currency) {
    var negative = minor < 0;
    var digits = String(Math.abs(minor));
    while (digits.length < exponent + 1) digits = "0" + digits;
    var text = exponent > 0
      ? digits.slice(0, digits.length - exponent) + "." + digits.slice(digits.length - exponent)
      : digits;
    return (negative ? "-" : "") + text + " " + currency;
  }

  function show(event) {
    var s = JSON.parse(event.data).session;
    amount.textContent = money(s.amount_inserted, s.exponent, s.currency) + " of " +
      money(s.amount_due, s.exponent, s.currency) + " inserted";
    if (s.state === "paid") {
      status.className = "paid";
      status.textContent = "Paid. Change due: " + money(s.change_due || 0, s.exponent, s.currency) +
        (s["final"] ? "" : " (checking the acceptor\u2026)");
    } else if (s.state === "cancelling") {
      status.className = "cancelled";
      status.textContent = "Cancelling\u2026 Refund so far: " + money(s.refund_due || 0, s.exponent, s.currency);
    } else if (s.state === "cancelled") {
      status.className = "cancelled";
      status.textContent = "Cancelled. Refund due: " + money(s.refund_due || 0, s.exponent, s.currency);
    }
    return s;
  }

  var url = "/v1/cash-sessions/" + encodeURIComponent(id) + "/events?token=" + encodeURIComponent(token);
  var source = new EventSource(url);
  ["session", "credit", "late_credit", "paid", "cancelling", "cancelled", "settled"].forEach(function (name) {
    source.addEventListener(name, function (event) {
      if (show(event)["final"]) source.close();
    });
  });
})();
