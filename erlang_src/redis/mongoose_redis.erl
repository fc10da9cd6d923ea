%% @doc MongooseIM's Redis helper on the `redis' pool `global'/`default'.
%% Results keep eredis's shapes: `cmd' gives the value itself (a binary,
%% `undefined', a list) or `{error, Reason}'; `cmds' gives one `{ok, Value}'
%% or `{error, Reason}' per command.
-module(mongoose_redis).
-export([cmd/1, cmd/2, cmds/1, cmds/2]).

-define(TIMEOUT, 5000).

%% A command and its arguments: binaries, strings, atoms, integers, iolists.
-type cmd() :: [iodata() | atom() | integer()].
-type value() :: binary() | undefined | [value()].

-spec cmd(cmd()) -> value() | {error, term()}.
cmd(Cmd) ->
    cmd(Cmd, ?TIMEOUT).

-spec cmd(cmd(), timeout()) -> value() | {error, term()}.
cmd(Cmd, Timeout) ->
    case mongoose_wpool:call_with_timeout(redis, global, default, {q, Cmd}, Timeout) of
        {ok, Value} -> Value;
        Other -> Other
    end.

-spec cmds([cmd()]) -> [{ok, value()} | {error, term()}] | {error, term()}.
cmds(Cmds) ->
    cmds(Cmds, ?TIMEOUT).

-spec cmds([cmd()], timeout()) -> [{ok, value()} | {error, term()}] | {error, term()}.
cmds(Cmds, Timeout) ->
    case mongoose_wpool:call_with_timeout(redis, global, default, {qp, Cmds}, Timeout) of
        Results when is_list(Results) -> Results;
        Other -> Other
    end.
