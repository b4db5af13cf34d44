// What each ending reason (src/callgate/signaling/reasons.py, docs/signaling.md) means to a person.

// `role` is this side of the call ("caller"/"callee"), `name` the other party's name.
export function endingMessage({ reason, endedBy, denial }, role, name) {
  const mine = endedBy === role;
  switch (reason) {
    case "unknown-user":
      return `There is no user called ${name}.`;
    case "no-route":
      return `${name} cannot be dialled here: no trunk takes this number.`;
    case "unknown-number":
      return `${name} is not a number the phone network knows.`;
    case "dial-out-limit":
      return "You have reached your limit of calls to numbers (at once, or in the last hour). Try again later.";
    case "max-duration":
      return "The call reached the longest time company policy allows.";
    case "offline":
      return `${name} is not signed in right now. Try again later.`;
    case "busy":
      return `${name} is busy on another call.`;
    case "rejected":
      return role === "caller" ? `${name} declined the call.` : "You declined the call.";
    case "cancelled":
      return role === "caller" ? "You cancelled the call." : `Missed call: ${name} hung up before you answered.`;
    case "no-answer":
      return role === "caller" ? `${name} did not answer.` : `Missed call from ${name}.`;
    case "answered-elsewhere":
      return "The call was answered on another of your devices.";
    case "hangup":
      return mine ? "You hung up." : `${name} hung up.`;
    case "caller-disconnected":
    case "callee-disconnected": {
      const theirs = (reason === "caller-disconnected") !== (role === "caller");
      return theirs
        ? `The call ended: ${name}'s connection was lost.`
        : "The call ended: your connection to the server was lost.";
    }
    case "setup-failed":
      return `The call could not be set up: no audio path to ${name} (network or firewall). Try again.`;
    case "media-lost":
      return "The call dropped: no audio arrived for several seconds (connection lost).";
    case "hold-timeout":
      return `The call ended: ${name}'s phone kept it on hold too long.`;
    case "session-expired":
      return `The call ended: ${name}'s phone stopped confirming the call.`;
    case "party-lost":
      return `The call ended: ${name}'s phone stopped answering.`;
    case "server-restart":
      return "The call ended because the server restarted.";
    case "policy-denied": {
      if (!denial) return "Company policy does not allow this call.";
      const rule = denial.rule ? ` (rule “${denial.rule}”)` : "";
      return `Company policy does not allow this call: ${denial.reason}${rule}.`;
    }
    case "recording-unavailable":
      return "This call must be recorded, and recording is not available right now.";
    case "ended-by-admin":
      return "An administrator ended this call.";
    case "signaling-lost":
      return "The call ended: the connection to the server was lost. Reconnecting…";
    case "microphone":
      return "The call ended: the microphone could not be used.";
    default:
      return `The call ended (${reason || "unknown reason"}).`;
  }
}

// Short labels for call history and records (CDR dispositions).
export const DISPOSITIONS = {
  answered: "Answered",
  "no-answer": "No answer",
  busy: "Busy",
  rejected: "Declined",
  denied: "Denied by policy",
  failed: "Failed",
  cancelled: "Cancelled",
};

export function dispositionLabel(disposition) {
  if (!disposition) return "In progress";
  return DISPOSITIONS[disposition] || disposition;
}
