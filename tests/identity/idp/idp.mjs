// An OpenID provider for the tests: panva's oidc-provider with the device authorization grant
// (RFC 8628) and its development sign-in pages (any login name, any password), on loopback.
// Usage: node idp.mjs PORT; IDP_CLIENT (JSON client metadata) and IDP_PEOPLE (JSON
// {login: claims}) in the environment. Prints "listening ISSUER" once it accepts connections.
import Provider from "oidc-provider";

const port = Number(process.argv[2]);
const issuer = `http://127.0.0.1:${port}`;
const people = JSON.parse(process.env.IDP_PEOPLE ?? "{}");

const provider = new Provider(issuer, {
  clients: [JSON.parse(process.env.IDP_CLIENT)],
  features: { deviceFlow: { enabled: true }, devInteractions: { enabled: true } },
  claims: {
    openid: ["sub"],
    profile: ["name", "preferred_username", "groups"],
    email: ["email"],
  },
  conformIdTokenClaims: false, // profile claims in the ID token, as most providers do
  findAccount: async (_ctx, id) => {
    if (!(id in people)) return undefined;
    return { accountId: id, claims: async () => ({ sub: id, ...people[id] }) };
  },
});
provider.proxy = false;
provider.listen(port, "127.0.0.1", () => console.log(`listening ${issuer}`));
