%% @doc Callbacks of the `elastic' pool type, kept for MongooseIM's sake:
%% the type's defaults and the strategies it refuses are in the NIF's table
%% of pool kinds (native/core/src/registry.rs). mongoose_elasticsearch uses
%% the pool `global'/`default'.
-module(mongoose_wpool_elastic).
-export([init/0, start/4, stop/2, is_supported_strategy/1]).

-spec init() -> ok.
init() -> ok.

-spec start(global | binary(), atom(), list(), map() | list()) -> {ok, term()} | {error, term()}.
start(HostType, Tag, WpoolOpts, ConnOpts) ->
    mongoose_wpool:start(elastic, HostType, Tag, WpoolOpts, ConnOpts).

-spec stop(global | binary(), atom()) -> ok | {error, term()}.
stop(HostType, Tag) ->
    mongoose_wpool:stop(elastic, HostType, Tag).

-spec is_supported_strategy(atom()) -> boolean().
is_supported_strategy(Strategy) ->
    mongoose_wpool:is_supported_strategy(elastic, Strategy).
