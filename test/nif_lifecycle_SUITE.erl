%% The NIF library across a stop of the application and a purge of its
%% module: the library stays mapped (its runtime threads may still run its
%% code), the VM survives, and loading again gives working pools.
-module(nif_lifecycle_SUITE).
-compile([export_all, nowarn_export_all]).
-include_lib("stdlib/include/assert.hrl").

%% Linux's scheduling policies, as /proc shows them.
-define(SCHED_OTHER, 0).
-define(SCHED_BATCH, 3).

all() -> [pinned_from_the_start, purge_and_reload, runtime_threads_default_policy,
          runtime_sched_batch_on, runtime_sched_batch_not_boolean, max_request_size_set,
          max_request_size_not_positive_integer].

%% In a fresh VM, a load refused right after the pin (a bad runtime_threads)
%% leaves the library mapped. Without the pin the VM's dlclose unmaps it:
%% no thread has run its code yet, so glibc has no reason of its own to keep
%% it (once the runtime runs, its threads' TLS destructors keep it mapped
%% anyway, which is why purge_and_reload alone cannot see the pin).
pinned_from_the_start(_Config) ->
    with_peer(#{runtime_threads => -1}, fun(Peer) ->
        ?assertEqual({error, on_load_failure},
                     peer:call(Peer, code, load_file, [mongoose_native_nif])),
        {ok, Maps} = peer:call(Peer, file, read_file, ["/proc/self/maps"]),
        ?assertNotEqual(nomatch, binary:match(Maps, <<"mongoose_native_nif.so">>))
    end).

purge_and_reload(_Config) ->
    ok = mongoose_wpool:ensure_started(),
    {ok, _} = mongoose_wpool:start(redis, global, life, [{workers, 2}], #{}),
    {ok, <<"PONG">>} = mongoose_wpool:call(redis, global, life, {q, ["PING"]}),
    ok = application:stop(mongoose_native),
    %% Unload the library while the runtime's threads exist.
    true = code:delete(mongoose_native_nif),
    _ = code:purge(mongoose_native_nif),
    %% Free every resource of the library so nothing else holds it.
    [erlang:garbage_collect(P) || P <- processes()],
    timer:sleep(500),
    %% Its code stays mapped: the runtime's threads may still run it.
    {ok, Maps} = file:read_file("/proc/self/maps"),
    ?assertNotEqual(nomatch, binary:match(Maps, <<"mongoose_native_nif.so">>)),
    {module, mongoose_native_nif} = code:load_file(mongoose_native_nif),
    ok = mongoose_wpool:ensure_started(),
    ?assertEqual([], mongoose_wpool:get_pools()),
    {ok, _} = mongoose_wpool:start(redis, global, life, [{workers, 2}], #{}),
    ?assertEqual({ok, <<"PONG">>}, mongoose_wpool:call(redis, global, life, {q, ["PING"]})),
    mongoose_wpool:stop().

%% The runtime's threads run under the default policy unless
%% runtime_sched_batch asks for SCHED_BATCH (README, Benchmarks).
runtime_threads_default_policy(_Config) ->
    {module, mongoose_native_nif} = code:ensure_loaded(mongoose_native_nif),
    Policies = runtime_policies(),
    ?assertNotEqual([], Policies),
    ?assertEqual([?SCHED_OTHER], lists:usort(Policies)).

runtime_sched_batch_on(_Config) ->
    with_peer(#{runtime_sched_batch => true}, fun(Peer) ->
        {module, mongoose_native_nif} = peer:call(Peer, code, ensure_loaded, [mongoose_native_nif]),
        Policies = peer:call(Peer, ?MODULE, runtime_policies, []),
        ?assertNotEqual([], Policies),
        ?assertEqual([?SCHED_BATCH], lists:usort(Policies))
    end).

runtime_sched_batch_not_boolean(_Config) ->
    load_refused(#{runtime_sched_batch => yes}).

%% A request past the configured bound is refused before it reaches the
%% pool, though a bound below the scheduler's decoding budget (256 KB) lets
%% it decode there; one within the bound goes through.
max_request_size_set(_Config) ->
    with_peer(#{max_request_size => 4096}, fun(Peer) ->
        ok = peer:call(Peer, mongoose_wpool, ensure_started, []),
        {ok, _} = peer:call(Peer, mongoose_wpool, start, [redis, global, small, [{workers, 1}], #{}]),
        Call = fun(Value) ->
                       peer:call(Peer, mongoose_wpool, call,
                                 [redis, global, small, {q, ["SET", "lifecycle:size", Value]}])
               end,
        Big = binary:copy(<<0>>, 8192),
        {error, {bad_request, Msg}} = Call(Big),
        ?assertNotEqual(nomatch, binary:match(Msg, <<"max_request_size">>)),
        ?assertMatch({error, {bad_request, _}},
                     peer:call(Peer, mongoose_wpool, cast,
                               [redis, global, small, {q, ["SET", "lifecycle:size", Big]}])),
        ?assertEqual({ok, <<"OK">>}, Call(binary:copy(<<0>>, 1024)))
    end).

max_request_size_not_positive_integer(_Config) ->
    [load_refused(#{max_request_size => Bad}) || Bad <- [0, -1, "1024", 1.5]].

%% In a fresh VM with its environment set to Env, the library refuses to load.
load_refused(Env) ->
    with_peer(Env, fun(Peer) ->
        ?assertEqual({error, on_load_failure},
                     peer:call(Peer, code, load_file, [mongoose_native_nif]))
    end).

%% A fresh VM with the application loaded and its environment set to Env,
%% the library not loaded yet.
with_peer(Env, Fun) ->
    {ok, Peer, _} = peer:start_link(#{connection => standard_io}),
    try
        ok = peer:call(Peer, code, add_paths, [code:get_path()]),
        ok = peer:call(Peer, application, load, [mongoose_native]),
        [ok = peer:call(Peer, application, set_env, [mongoose_native, K, V])
         || {K, V} <- maps:to_list(Env)],
        Fun(Peer)
    after
        peer:stop(Peer)
    end.

%% The scheduling policy of each of this VM's runtime threads: field 41 of
%% /proc's stat, the 39th after the command name's closing parenthesis.
runtime_policies() ->
    {ok, Tids} = file:list_dir("/proc/self/task"),
    [policy(Tid) || Tid <- Tids,
                    read("/proc/self/task/" ++ Tid ++ "/comm") =:= <<"mongoose_native\n">>].

policy(Tid) ->
    Stat = read("/proc/self/task/" ++ Tid ++ "/stat"),
    [_, AfterName] = binary:split(Stat, <<") ">>),
    binary_to_integer(lists:nth(39, binary:split(AfterName, <<" ">>, [global]))).

read(Path) ->
    {ok, Bin} = file:read_file(Path),
    Bin.
