%% @doc Callbacks of the `riak' pool type, kept for MongooseIM's sake:
%% the type's defaults and the strategies it refuses (`available_worker',
%% as seed 002 says) are in the NIF's table of pool kinds
%% (native/core/src/registry.rs). mongoose_riak uses the pool
%% `global'/`default'.
-module(mongoose_wpool_riak).
-export([init/0, start/4, stop/2, is_supported_strategy/1]).

-spec init() -> ok.
init() -> ok.

-spec start(global | binary(), atom(), list(), map() | list()) -> {ok, term()} | {error, term()}.
start(HostType, Tag, WpoolOpts, ConnOpts) ->
    mongoose_wpool:start(riak, HostType, Tag, WpoolOpts, ConnOpts).

-spec stop(global | binary(), atom()) -> ok | {error, term()}.
stop(HostType, Tag) ->
    mongoose_wpool:stop(riak, HostType, Tag).

-spec is_supported_strategy(atom()) -> boolean().
is_supported_strategy(Strategy) ->
    mongoose_wpool:is_supported_strategy(riak, Strategy).
