// Validates request bodies with Stack Auth's own yup schemas, as its backend validates a request.
//
// stdin: a JSON array of {"schema": NAME, "body": VALUE}; stdout: one JSON line per item, in order,
// {"ok": true} or {"ok": false, "errors": [yup's messages]}. NAME is one of:
//   users.create      usersCrud.server.createSchema (POST /users body)
//   users.update      usersCrud.server.updateSchema (PATCH /users/{id} body)
//   oauth-providers.create  oauthProviderCrud.server.createSchema (POST /oauth-providers body)
//   users.list.query  the query of GET /users: the package does not publish it; below, the
//                     querySchema of apps/backend/src/app/api/latest/users/crud.tsx, field for
//                     field, built from the package's own yup helpers
//   send-reset-code   the body of POST /auth/password/send-reset-code (route.tsx): the package's
//                     emailSchema and urlSchema, both defined
//   contact-channels.update      contactChannelsCrud.server.updateSchema (PATCH /contact-channels/{user_id}/{id} body)
//   contact-channels.read        contactChannelsCrud.server.readSchema (each answer, and each listed item)
//   contact-channels.list.query  the query of GET /contact-channels, and
//   contact-channels.params      the path of GET, PATCH, DELETE /contact-channels/{user_id}/{contact_channel_id}
//                     ({user_id, contact_channel_id}): neither is published; below, the querySchema and
//                     paramsSchema of apps/backend/src/app/api/latest/contact-channels/crud.tsx, built
//                     from the package's own yup helpers
//
// How the backend validates (apps/backend/src/route-handlers/smart-request.tsx, validate()): the
// whole request object against yupObject({..., body, query, ...}) with the package's yupValidate and
// {abortEarly: false, context: {noUnknownPathPrefixes: ["body", "query", "params"]}}, currentUserId
// null for a server-key request. The prefixes switch on yupObject's "no unknown properties" test
// under body and query (an unknown key is refused, never stripped: stripUnknown stays off), so each
// value is validated here at the same path, wrapped as {body: ...} or {query: ...}.
//
// The packages are loaded from SUPAMOVE_CONTRACT_NODE_MODULES (default: node_modules next to this
// file), where .ci/run installs them with `npm ci`.
import { createRequire } from "node:module";
import { existsSync, readFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const modules = resolve(process.env.SUPAMOVE_CONTRACT_NODE_MODULES || join(here, "node_modules"));
if (!existsSync(join(modules, "@stackframe", "stack-shared", "package.json"))) {
  console.error(`@stackframe/stack-shared is not installed in ${modules}: run .ci/run (npm ci --prefix tests/contract)`);
  process.exit(3);
}
const require = createRequire(join(modules, "..", "package.json"));
const fields = require("@stackframe/stack-shared/dist/schema-fields");
const { usersCrud } = require("@stackframe/stack-shared/dist/interface/crud/users");
const { oauthProviderCrud } = require("@stackframe/stack-shared/dist/interface/crud/oauth-providers");
const { contactChannelsCrud } = require("@stackframe/stack-shared/dist/interface/crud/contact-channels");
const { yupObject, yupString, yupNumber, emailSchema, urlSchema, userIdOrMeSchema, yupValidate } = fields;

// crud.tsx, usersCrudHandlers querySchema.
const usersQuerySchema = yupObject({
  team_id: yupString().uuid().optional(),
  limit: yupNumber().integer().min(1).optional(),
  cursor: yupString().uuid().optional(),
  order_by: yupString().oneOf(["signed_up_at"]).optional(),
  desc: yupString().oneOf(["true", "false"]).optional(),
  query: yupString().optional(),
  include_anonymous: yupString().oneOf(["true", "false"]).optional(),
  only_anonymous: yupString().oneOf(["true", "false"]).optional(),
  include_restricted: yupString().oneOf(["true", "false"]).optional(),
});

// auth/password/send-reset-code/route.tsx, request.body.
const sendResetCodeBody = yupObject({
  email: emailSchema.defined(),
  callback_url: urlSchema.defined(),
}).defined();

// contact-channels/crud.tsx, contactChannelsCrudHandlers querySchema and paramsSchema.
const contactChannelsQuerySchema = yupObject({
  user_id: userIdOrMeSchema.optional(),
  contact_channel_id: yupString().uuid().optional(),
});
const contactChannelParamsSchema = yupObject({
  user_id: userIdOrMeSchema.defined(),
  contact_channel_id: yupString().uuid().defined(),
});

const SCHEMAS = {
  "users.create": ["body", usersCrud.server.createSchema],
  "users.update": ["body", usersCrud.server.updateSchema],
  "oauth-providers.create": ["body", oauthProviderCrud.server.createSchema],
  "users.list.query": ["query", usersQuerySchema],
  "send-reset-code": ["body", sendResetCodeBody],
  "contact-channels.update": ["body", contactChannelsCrud.server.updateSchema],
  "contact-channels.read": ["body", contactChannelsCrud.server.readSchema],
  "contact-channels.list.query": ["query", contactChannelsQuerySchema],
  "contact-channels.params": ["params", contactChannelParamsSchema],
};

const OPTIONS = {
  abortEarly: false,
  context: { noUnknownPathPrefixes: ["body", "query", "params"] },
  currentUserId: null,
};

async function check(item) {
  const entry = SCHEMAS[item.schema];
  if (!entry) return { ok: false, errors: [`unknown schema ${item.schema}`] };
  const [part, schema] = entry;
  try {
    await yupValidate(yupObject({ [part]: schema }), { [part]: item.body }, OPTIONS);
    return { ok: true };
  } catch (error) {
    if (Array.isArray(error?.errors)) return { ok: false, errors: error.errors };
    // yupValidate's own known error: `me` for a user id, without a user (a server key has none).
    if (typeof error?.errorCode === "string") return { ok: false, errors: [`${error.errorCode}: ${error.message}`] };
    throw error;
  }
}

const items = JSON.parse(readFileSync(0, "utf8"));
for (const item of items) {
  process.stdout.write(JSON.stringify(await check(item)) + "\n");
}
