%% @doc Callbacks of the `ldap' pool type, kept for MongooseIM's sake: the
%% type's defaults are in the NIF's table of pool kinds
%% (native/core/src/registry.rs). Requests are MongooseIM 6.3's
%% `mongoose_ldap_worker' ones: `mongoose_wpool:call(ldap, HostType, Tag,
%% {EldapFunction, Args})'; `eldap_pool' is the older API on top of them.
-module(mongoose_wpool_ldap).
-export([init/0, start/4, stop/2, is_supported_strategy/1]).

-spec init() -> ok.
init() -> ok.

-spec start(mongoose_wpool:host_type(), mongoose_wpool:tag(), list(), term()) ->
          term().
start(HostType, Tag, WpoolOpts, ConnOpts) ->
    mongoose_wpool:start(ldap, HostType, Tag, WpoolOpts, ConnOpts).

-spec stop(mongoose_wpool:host_type(), mongoose_wpool:tag()) -> ok.
stop(HostType, Tag) ->
    mongoose_wpool:stop(ldap, HostType, Tag).

-spec is_supported_strategy(atom()) -> boolean().
is_supported_strategy(Strategy) ->
    mongoose_wpool:is_supported_strategy(ldap, Strategy).
