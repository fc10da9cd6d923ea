%% @doc Callbacks of the `cassandra' pool type, kept for MongooseIM's sake:
%% the type's defaults and the strategies it refuses are in the NIF's table
%% of pool kinds (native/core/src/registry.rs). mongoose_cassandra calls
%% the pools `global'/`Tag'.
-module(mongoose_wpool_cassandra).
-export([init/0, start/4, stop/2, is_supported_strategy/1]).

-spec init() -> ok.
init() -> ok.

-spec start(global | binary(), atom(), list(), map() | list()) -> {ok, term()} | {error, term()}.
start(HostType, Tag, WpoolOpts, ConnOpts) ->
    mongoose_wpool:start(cassandra, HostType, Tag, WpoolOpts, ConnOpts).

-spec stop(global | binary(), atom()) -> ok | {error, term()}.
stop(HostType, Tag) ->
    mongoose_wpool:stop(cassandra, HostType, Tag).

-spec is_supported_strategy(atom()) -> boolean().
is_supported_strategy(Strategy) ->
    mongoose_wpool:is_supported_strategy(cassandra, Strategy).
