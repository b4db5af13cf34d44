"""The server-side media anchor: peer connections that end at the server and forward each party's
RTP to the other without transcoding (docs/recording.md, "Media anchor")."""
